"""Does a search beat the grid with the same number of runs? Reads the sweeps of the commands in
this folder's README from the MLflow store and prints, per replicate, the best worst-class IoU
each arm found, its configuration and its val CE, then mean ± 95 % Student-t interval over the
replicates and of the paired difference.

    python experiments/search_vs_grid/measure.py [--tracking-uri sqlite:///…/mlflow.db]
"""

from __future__ import annotations

import argparse

import optuna
import pandas as pd
from mlflow.tracking import MlflowClient

from seglab import schema
from seglab.analysis.runs import child_runs
from seglab.core.statistics import t_interval
from seglab.tracking.store import resolve_uri
from seglab.tracking.study import open_storage, storage_url

EXPERIMENT = "search_vs_grid"
SEED = schema.SEED_PARAM


def best(runs: list, arm: str, sampler_seed: int | None, training_seed: int) -> dict[str, object]:
    """The finished run of ``runs`` with the highest final val/min_iou, as a table row."""
    top = max(runs, key=lambda r: r.data.metrics[schema.VAL_MIN_IOU])
    return {
        "arm": arm,
        "sampler seed": sampler_seed,
        "training seed": training_seed,
        "runs": len(runs),
        "best worst-class IoU": top.data.metrics[schema.VAL_MIN_IOU],
        "its val/ce": top.data.metrics[schema.VAL_CE],
        "its mIoU": top.data.metrics[schema.VAL_MIOU],
        "best run": top.info.run_name,
    }


def sampler_seeds(client: MlflowClient, uri: str) -> dict[str, int]:
    """Parent run id -> the sampler seed of its search, from the studies beside the store (the
    README's commands name each study ``search_vs_grid.<seed|paired><sampler seed>``)."""
    url = storage_url(uri, "outputs")
    return {
        summary.user_attrs[schema.STUDY_PARENT]: int(summary.study_name[-1])
        for summary in optuna.get_all_study_summaries(open_storage(url))
        if summary.study_name.startswith(EXPERIMENT)
    }


def replicates(client: MlflowClient, experiment_id: str, searches: dict[str, int]) -> pd.DataFrame:
    """One row per replicate: the grid per training seed, each search (its sampler seed and
    training seed)."""
    parents = client.search_runs(
        [experiment_id], filter_string=f"tags.`{schema.TAG_SWEEP}` = '{schema.SWEEP_PARENT}'"
    )
    rows = []
    for parent in parents:
        runs = [r for r in child_runs(client, parent.info.run_id) if r.info.status == "FINISHED"]
        if parent.info.run_id in searches:
            (training,) = {int(r.data.params[SEED]) for r in runs}
            rows.append(best(runs, "search", searches[parent.info.run_id], training))
            continue
        for seed in sorted({int(r.data.params[SEED]) for r in runs}):
            of_seed = [r for r in runs if int(r.data.params[SEED]) == seed]
            rows.append(best(of_seed, "grid", None, seed))
    table = pd.DataFrame(rows).sort_values(["arm", "training seed", "sampler seed"])
    return table.astype({"sampler seed": "Int64"})


def shown(values: pd.Series) -> str:
    """Mean ± 95 % Student-t half-width."""
    interval = t_interval(values.tolist())
    return f"{interval.mean:.3f} ± {interval.half_width:.3f} (n={interval.n})"


def compare(name: str, grid: pd.DataFrame, search: pd.DataFrame) -> None:
    """Prints each arm's mean best worst-class IoU and val/ce, and the difference's interval
    (paired when both arms have one row per training seed)."""
    print(f"{name}:")
    for arm, part in (("grid", grid), ("search", search)):
        print(
            f"  {arm}: best worst-class IoU {shown(part['best worst-class IoU'])}, "
            f"its val/ce {shown(part['its val/ce'])}"
        )
    paired = list(grid["training seed"]) == list(search["training seed"])
    gain = search["best worst-class IoU"].to_numpy() - (
        grid["best worst-class IoU"].to_numpy() if paired else grid["best worst-class IoU"].mean()
    )
    interval = t_interval(list(gain))
    beyond = interval.low > 0 or interval.high < 0
    verdict = "n/a (one replicate)" if interval.n < 2 else ("beyond" if beyond else "within")
    print(
        f"  search - grid{', paired by training seed' if paired else ''}: "
        f"{shown(pd.Series(gain))}: {verdict} seed noise"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tracking-uri", default=None)
    uri, _ = resolve_uri(parser.parse_args().tracking_uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    table = replicates(client, experiment, sampler_seeds(client, uri))
    with pd.option_context("display.width", 250, "display.max_colwidth", 90):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
    print()
    grid = table[table.arm == "grid"]
    search = table[table.arm == "search"]
    paired = search[search["sampler seed"] == search["training seed"]]
    compare("training seeds 0-2, sampler seed = training seed", grid, paired)
    at_zero = search[search["training seed"] == 0]
    compare("training seed 0, sampler seeds 0-2", grid[grid["training seed"] == 0], at_zero)


if __name__ == "__main__":
    main()
