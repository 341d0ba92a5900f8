"""Many classes: does the end-of-run work (figures, tables, per-image counts, the model) and the
memory stay bounded at ADE20K's class count?

A synthetic folder set (64x64 PNGs, index masks of Voronoi regions drawn from C classes) is
trained for 3 epochs by ``seglab train data=folder``, once with 5 classes and once with
150, each in a fresh process. Each run records how long its phases took (tags
``seglab.seconds.setup``, ``.training``, ``.end_of_run``); the process's peak resident memory
comes from ``getrusage``.

Goals: at 150 classes the end-of-run work takes at most 10 % of the run, and the peak memory
stays within 1.5x of the 5-class run's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import common
from mlflow.tracking import MlflowClient

SIZE = 64


def run_one(root: Path, out: Path, epochs: int) -> dict[str, float]:
    """One training run in a fresh process; its phase seconds and peak RSS in MiB."""
    command = [
        sys.executable,
        "-m",
        "seglab.train",
        "data=folder",
        f"data.root={root}",
        f"data.image_size={SIZE}",
        f"trainer.epochs={epochs}",
        f"paths.output_dir={out}",
    ]
    # A wrapper process per run: ru_maxrss of children is the largest child it ever waited for.
    wrapper = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    measured = subprocess.run(
        [sys.executable, "-c", wrapper, *command], check=True, capture_output=True, text=True
    )
    peak_kib = int(measured.stdout.strip().splitlines()[-1])
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    seconds = {
        phase: float(run.data.tags[f"seglab.seconds.{phase}"])
        for phase in ("setup", "training", "end_of_run")
    }
    seconds["total"] = sum(seconds.values())
    return {**seconds, "peak_rss_mib": peak_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for classes in (5, 150):
            root = Path(tmp) / f"c{classes}"
            common.write_folder(root, classes, {"train": args.train, "val": args.val}, (SIZE, SIZE))
            results[classes] = run_one(root, Path(tmp) / f"out{classes}", args.epochs)
            print(classes, json.dumps(results[classes]), flush=True)
    many, few = results[150], results[5]
    end_share = many["end_of_run"] / many["total"]
    memory_ratio = many["peak_rss_mib"] / few["peak_rss_mib"]
    common.write(
        "many_classes",
        {
            "settings": {"size": SIZE, "train": args.train, "val": args.val, "epochs": args.epochs},
            "runs": {str(k): v for k, v in results.items()},
            "end_of_run_share_at_150": end_share,
            "peak_rss_ratio_150_over_5": memory_ratio,
            "goals": {"end_of_run_share_at_150": "<= 0.10", "peak_rss_ratio_150_over_5": "<= 1.5"},
        },
        [
            f"Synthetic folder set, {SIZE}x{SIZE}, {args.train} train + {args.val} val images, "
            f"{args.epochs} epochs, each in a fresh process:",
            *(
                f"- {c} classes: setup {r['setup']:.1f} s, training {r['training']:.1f} s, end of "
                f"run {r['end_of_run']:.1f} s; peak RSS {r['peak_rss_mib']:.0f} MiB"
                for c, r in sorted(results.items())
            ),
            f"- end of run at 150 classes: {end_share:.1%} of the run (goal <= 10 %)",
            f"- peak RSS 150 / 5 classes: {memory_ratio:.2f} (goal <= 1.5)",
        ],
    )


if __name__ == "__main__":
    main()
