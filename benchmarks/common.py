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
    """Wall time and this process's CPU time (all threads) of every epoch; the first includes
    tracing: callers drop it. On a shared machine the CPU time is the steadier of the two: it
    does not count the time other tenants hold the cores."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)


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


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds x 2 of every convolution in one forward pass of one image.

    Conv2D: ``2 * kh * kw * c_in * c_out * h_out * w_out``; Conv2DTranspose: the same over the
    input grid. Batch norm, activations and concatenations are left out (a few % of a U-Net).
    """
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            grid = layer.input.shape[1] * layer.input.shape[2]
        elif isinstance(layer, keras.layers.Conv2D):
            grid = layer.output.shape[1] * layer.output.shape[2]
        else:
            continue
        kh, kw = layer.kernel_size
        flops += 2 * kh * kw * layer.input.shape[-1] * layer.filters * grid
    return flops


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 FLOP/s of a ``size`` x ``size`` matmul on this machine (the CPU's ceiling)."""
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
