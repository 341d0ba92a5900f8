"""Does training in bfloat16 change what a run finds? The precision experiment's runs paired
by configuration and seed: each class's final validation IoU in bfloat16 minus float32, beside
how far the seeds of one precision spread, and whether the hidden-failure verdicts agree.

    .venv/bin/seglab train experiment=precision
    .venv/bin/python experiments/precision/measure.py [--tracking-uri sqlite:///...]
"""

from __future__ import annotations

import argparse

import pandas as pd

from seglab import schema
from seglab.analysis.runs import class_order, experiment_runs
from seglab.tracking.store import open_client, resolve_uri

CONFIGURATION = ["loss", "class_weights"]


def final_ious(runs: list) -> pd.DataFrame:
    """One row per finished run: its configuration, seed, precision, hidden classes and the
    last epoch's validation IoU of each class."""
    names = class_order(runs)
    rows = []
    for run in runs:
        if run.info.status != "FINISHED":
            continue
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        rows.append(
            {
                **{axis: tags.get(schema.axis_tag(axis), "") for axis in CONFIGURATION},
                "seed": int(params[schema.SEED_PARAM]),
                "precision": params[schema.PRECISION_PARAM],
                "hidden": tags.get(schema.TAG_HIDDEN_CLASSES, ""),
                **{n: metrics[schema.per_class(schema.VAL, schema.IOU, n)] for n in names},
            }
        )
    return pd.DataFrame(rows)


def measure(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Paired differences (bfloat16 - float32) per configuration and seed, the seeds' spread
    (max - min) per configuration and precision, and the verdicts side by side."""
    classes = [c for c in frame.columns if c not in {*CONFIGURATION, "seed", "precision", "hidden"}]
    keyed = frame.set_index([*CONFIGURATION, "seed", "precision"])
    low = keyed.xs("bfloat16", level="precision")
    high = keyed.xs("float32", level="precision")
    difference = (low[classes] - high[classes]).dropna()
    grouped = frame.groupby([*CONFIGURATION, "precision"])[classes]
    spread = grouped.max() - grouped.min()
    verdicts = pd.DataFrame({"float32": high["hidden"], "bfloat16": low["hidden"]}).dropna()
    return {"difference": difference, "spread": spread, "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="precision")
    args = parser.parse_args()
    client = open_client(resolve_uri(args.tracking_uri)[0])
    found = measure(final_ious(experiment_runs(client, args.experiment)))
    difference = found["difference"]
    print("bfloat16 - float32, final val IoU per class (paired by configuration and seed):")
    print(difference.round(3).to_string())
    print(
        f"\nlargest |difference|: {difference.abs().to_numpy().max():.3f}; "
        f"mean |difference|: {difference.abs().to_numpy().mean():.4f}"
    )
    print("\nspread of the seeds (max - min) per configuration and precision:")
    print(found["spread"].round(3).to_string())
    verdicts = found["verdicts"]
    agree = int((verdicts["float32"] == verdicts["bfloat16"]).sum())
    print(f"\nhidden-failure verdicts: {agree} of {len(verdicts)} pairs name the same classes")
    print(verdicts.to_string())


if __name__ == "__main__":
    main()
