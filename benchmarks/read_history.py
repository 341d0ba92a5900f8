"""Reading a team's runs back: how long do the report and ``seglab compare`` take on 100 runs x
150 classes through an MLflow server, and what does each run's ``metric_history.parquet`` cost
to write?

A fresh ``mlflow server`` (sqlite backend, artifacts proxied, one worker, on 127.0.0.1) receives
100 synthetic runs of the keys seglab logs per epoch at 150 classes (``val/iou|recall|
loss_share/<class>`` and five whole-split keys; 20 epochs, 455 keys, 9,100 points a run), each
with its ``metric_history.parquet`` as the tracker writes it. Then, through the server:

- ``analysis.runs.history`` of every run from the artifacts (one download a run), and of three
  runs from the metric history (one call per run and key, as before the artifact): the 100-run
  figure of that way is projected from the three, and said so;
- the sweep report (``build_report``) of the 100 runs, and ``seglab compare``'s history of two;
- the writer's cost: 20 epochs of one 150-class run logged by ``MlflowTracker.log_metrics``
  (metrics, then the artifact) against the metrics alone, interleaved over 3 rounds.

Goal: the report in at most 30 s through a server.

    python benchmarks/read_history.py [--runs 100] [--classes 150] [--epochs 20]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import common
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from seglab import schema
from seglab.analysis.report import build_report
from seglab.analysis.runs import history
from seglab.tracking.tracker import MlflowTracker

KINDS = (schema.IOU, schema.RECALL, schema.LOSS_SHARE)
WHOLE = (schema.TRAIN_LOSS, schema.VAL_LOSS, schema.VAL_CE, schema.VAL_MIOU, schema.VAL_MIN_IOU)
LOSSES = ("ce", "dice")


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` over ``folder/server.db``; its process and address once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{folder}/server.db", "--artifacts-destination", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=(folder / "server.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return server, uri
        except OSError:
            time.sleep(0.5)
    raise RuntimeError((folder / "server.log").read_text())


def epoch_metrics(rng: np.random.Generator, classes: list[str]) -> dict[str, float]:
    """One epoch's metrics of a 150-class run: random values of the right shapes."""
    metrics = {key: float(rng.random()) for key in WHOLE}
    for kind in KINDS:
        metrics.update(
            {schema.per_class(schema.VAL, kind, c): float(rng.random()) for c in classes}
        )
    return metrics


def make_runs(uri: str, runs: int, classes: list[str], epochs: int) -> list[str]:
    """``runs`` runs of ``epochs`` epochs, each with its history artifact; their ids."""
    tracker = MlflowTracker("read_history", tracking_uri=uri)
    rng = np.random.default_rng(0)
    ids = []
    for index in range(runs):
        tags = {
            schema.TAG_CLASS_NAMES: pd.Series(classes).to_json(orient="values"),
            schema.axis_tag("loss"): LOSSES[index % 2],
        }
        run_id = tracker.client.create_run(tracker.experiment_id(), tags=tags).info.run_id
        tracker.run_id = run_id
        tracker.log_params({"loss._target_": LOSSES[index % 2], schema.SEED_PARAM: index // 2})
        points = []
        for epoch in range(1, epochs + 1):
            metrics = epoch_metrics(rng, classes)
            now = int(time.time() * 1000)
            batch = [Metric(k, v, now, epoch) for k, v in metrics.items()]
            for start in range(0, len(batch), 1000):  # MLflow's log_batch limit
                tracker.client.log_batch(run_id, metrics=batch[start : start + 1000])
            points += [(k, epoch, v) for k, v in metrics.items()]
        frame = pd.DataFrame(points, columns=list(schema.HISTORY_COLUMNS))
        tracker.log_parquet(frame, schema.HISTORY_FILE)  # as MlflowTracker.log_metrics writes it
        tracker.client.set_terminated(run_id, "FINISHED")
        ids.append(run_id)
    return ids


def clocked(function, *args) -> tuple[float, float, object]:
    """Wall and CPU seconds of ``function(*args)``, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def writer_cost(uri: str, classes: list[str], epochs: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of ``epochs`` epochs logged with the artifact (``log_metrics``) and without it
    (the metrics' ``log_batch`` alone), alternating per round."""
    tracker = MlflowTracker("read_history_writer", tracking_uri=uri)
    rng = np.random.default_rng(1)
    seconds: dict[str, list[float]] = {"with metric_history.parquet": [], "metrics only": []}
    for round_ in range(rounds):
        order = list(seconds) if round_ % 2 == 0 else list(reversed(seconds))
        for variant in order:
            with tracker.start_run({}):
                start = time.perf_counter()
                for epoch in range(1, epochs + 1):
                    metrics = epoch_metrics(rng, classes)
                    if variant == "metrics only":
                        batch = [Metric(k, v, 0, epoch) for k, v in metrics.items()]
                        tracker.client.log_batch(tracker.run_id, metrics=batch)
                    else:
                        tracker.log_metrics(metrics, epoch)
                seconds[variant].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--slow-runs", type=int, default=3)
    args = parser.parse_args()
    classes = [f"class {i}" for i in range(args.classes)]
    with tempfile.TemporaryDirectory() as folder:
        server, uri = serve(Path(folder))
        try:
            made = time.perf_counter()
            ids = make_runs(uri, args.runs, classes, args.epochs)
            made = time.perf_counter() - made
            client = MlflowClient(uri)
            runs = [client.get_run(i) for i in ids]
            fast = clocked(history, client, runs)
            slow = clocked(lambda: history(client, runs[: args.slow_runs], from_artifact=False))
            report = clocked(build_report, client, runs)
            compare = clocked(history, client, runs[:2])
            assert len(fast[2]) == args.runs * args.epochs * (len(WHOLE) + 3 * args.classes)
            pd.testing.assert_frame_equal(
                fast[2][fast[2].run_id.isin(ids[: args.slow_runs])].reset_index(drop=True),
                slow[2],
            )
            writing = writer_cost(uri, classes, args.epochs, rounds=3)
        finally:
            server.terminate()
            server.wait(timeout=30)
    keys = len(WHOLE) + 3 * args.classes
    per_run_slow, per_run_cpu = slow[0] / args.slow_runs, slow[1] / args.slow_runs
    ratios = [
        w / m
        for w, m in zip(
            writing["with metric_history.parquet"], writing["metrics only"], strict=True
        )
    ]
    payload = {
        "runs": args.runs, "classes": args.classes, "epochs": args.epochs, "keys_per_run": keys,
        "seconds_to_make_runs": made,
        "history_from_artifacts": {"wall": fast[0], "cpu": fast[1]},
        "history_from_metric_calls_per_run": {"wall": per_run_slow, "cpu": per_run_cpu},
        "report": {"wall": report[0], "cpu": report[1]},
        "compare_two_runs_history": {"wall": compare[0], "cpu": compare[1]},
        "writer_seconds": writing, "writer_ratio": ratios,
    }  # fmt: skip
    common.write(
        "read_history",
        payload,
        [
            f"{args.runs} runs x {args.classes} classes x {args.epochs} epochs ({keys} keys a "
            f"run) through `mlflow server` (sqlite, 1 worker, 127.0.0.1):",
            "",
            "| what | wall s | CPU s |",
            "|---|---|---|",
            f"| history of {args.runs} runs from `metric_history.parquet` (one download a run) | "
            f"{fast[0]:.1f} | {fast[1]:.1f} |",
            f"| history from the metric history, one call per key: {args.slow_runs} runs "
            f"measured, {per_run_slow:.1f} s a run, so {args.runs} runs projected | "
            f"{per_run_slow * args.runs:.0f} (projected) | {per_run_cpu * args.runs:.0f} "
            "(projected) |",
            f"| the sweep report of {args.runs} runs (`build_report`) | {report[0]:.1f} | "
            f"{report[1]:.1f} |",
            f"| `seglab compare`'s history of 2 runs | {compare[0]:.2f} | {compare[1]:.2f} |",
            "",
            f"Writing: {args.epochs} epochs of one {args.classes}-class run, with "
            f"`metric_history.parquet` after each epoch / metrics only, 3 rounds interleaved: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f" (seconds {', '.join(f'{s:.1f}' for s in writing['with metric_history.parquet'])} "
            f"against {', '.join(f'{s:.1f}' for s in writing['metrics only'])}). "
            f"Goal: the report in <= 30 s.",
        ],
    )


if __name__ == "__main__":
    main()
