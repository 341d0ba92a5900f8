"""Shared helpers: machine info, epoch timing, and writing results/<name>.json + .md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

RESULTS = Path(__file__).parent / "results"


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch (the first includes tracing: callers drop it)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write(name: str, payload: dict[str, Any], summary_lines: list[str]) -> None:
    """Writes ``results/<name>.json`` and ``results/<name>.md`` and prints the summary."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "machine": machine_info(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = "\n".join([f"## {name}", "", *summary_lines, ""])
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
