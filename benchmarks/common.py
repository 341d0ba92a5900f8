"""Shared helpers: machine info, epoch timing, and writing results/<name>.json + .md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
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


def clocked(function: Callable[..., Any], add: Callable[[float], None]) -> Callable[..., Any]:
    """``function``, adding the wall seconds of every call to ``add`` (marked ``clocked``)."""

    def timed(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            add(time.perf_counter() - start)

    timed.clocked = True  # type: ignore[attr-defined]
    return timed


class EpochTimer(keras.callbacks.Callback):
    """Per epoch: wall time, this process's CPU time (all threads), and the wall time spent
    inside the model's compiled train and test steps; the rest of an epoch is Python
    (callbacks, iterators, epoch-end work). The first epoch includes tracing: callers drop it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.step_seconds: list[float] = []
        self._in_steps = 0.0

    def set_model(self, model: keras.Model) -> None:
        # Keras makes the step functions after handing the model to its callbacks.
        super().set_model(model)
        for phase in ("train", "test"):
            self._clock(model, phase)

    def _clock(self, model: keras.Model, phase: str) -> None:
        make = getattr(model, f"make_{phase}_function")

        def make_timed(force: bool = False) -> None:
            make(force)
            function = getattr(model, f"{phase}_function")
            if getattr(function, "clocked", False):
                return

            setattr(model, f"{phase}_function", clocked(function, self._add_step_seconds))

        setattr(model, f"make_{phase}_function", make_timed)

    def _add_step_seconds(self, seconds: float) -> None:
        self._in_steps += seconds

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        self._in_steps = 0.0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)
        self.step_seconds.append(self._in_steps)

    def outside_steps(self) -> list[float]:
        """Seconds of each epoch spent outside the compiled steps."""
        return [total - steps for total, steps in zip(self.seconds, self.step_seconds, strict=True)]


def random_segmentation_data(
    train: int, val: int, shape: tuple[int, int, int], classes: int, ignore_index: int = 255
) -> Any:
    """A dataset of random uint8 images and random labels held in memory (seed 0): speed does
    not depend on what the pixels show."""
    from seglab.data.dataset import from_arrays

    rng = np.random.default_rng(0)
    split = {}
    for name, count in (("train", train), ("val", val)):
        images = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        split[name] = (images, rng.integers(0, classes, (count, *shape[:2])))
    names = [f"c{i}" for i in range(classes)]
    return from_arrays(split["train"], split["val"], names, ignore_index)


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


def iterate_seconds(stream: tf.data.Dataset, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds (all threads) of one pass over ``stream``, no model; the
    first pass traces and is dropped."""
    wall, cpu = [], []
    for _ in range(repeats + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in stream:
            pass
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return median(wall[1:]), median(cpu[1:])


def train_rate(model: keras.Model, batch: tuple[Any, Any], repeats: int, seconds: float) -> float:
    """Training images/s of the compiled ``model`` on one in-memory ``(x, y)`` batch repeated
    (no input pipeline): median of ``repeats`` epochs of about ``seconds`` each, after a warm-up.
    """
    per_execution = model.steps_per_execution
    stream = tf.data.Dataset.from_tensors(batch).cache()
    model.fit(stream.repeat(2 * per_execution), epochs=1, verbose=0)  # trace, warm up
    start = time.perf_counter()
    model.fit(stream.repeat(per_execution), epochs=1, verbose=0)
    per_step = (time.perf_counter() - start) / per_execution
    steps = per_execution * max(1, round(seconds / per_step / per_execution))
    timer = EpochTimer()
    model.fit(stream.repeat(steps), epochs=repeats, verbose=0, callbacks=[timer])
    return steps * len(batch[0]) / median(timer.seconds)


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


def paired_steps(
    models: dict[str, tuple[keras.Model, tf.data.Dataset, tf.data.Dataset]], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds of single compiled train and test steps of each traced model, alternated.

    ``models`` maps a variant name to its compiled, already fitted (traced) model and its
    training and validation streams. Each round runs one step of every variant on one fixed
    batch, the order reversing every round, so a slow spell of this shared machine (seconds
    long) hits every variant of a round alike: the per-round ratios stay steady where whole
    epochs, minutes apart, do not.
    """

    def fixed(stream: tf.data.Dataset) -> Any:
        return iter(tf.data.Dataset.from_tensors(next(iter(stream))).repeat())

    steps = {}
    for name, (model, train, val) in models.items():
        steps["train", name] = model.train_function, fixed(train)
        steps["test", name] = model.test_function, fixed(val)
    names = list(models)
    seconds: dict[str, dict[str, list[float]]] = {"train": {}, "test": {}}
    for round_ in range(rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        for phase in ("train", "test"):
            for name in order:
                function, iterator = steps[phase, name]
                start = time.perf_counter()
                keras.tree.map_structure(np.asarray, function(iterator))
                seconds[phase].setdefault(name, []).append(time.perf_counter() - start)
    return seconds


def step_ratios(seconds: dict[str, dict[str, list[float]]], a: str, b: str) -> dict[str, float]:
    """Median per-round ratio of ``a``'s step time over ``b``'s, per phase."""
    return {
        phase: median([x / y for x, y in zip(t[a], t[b], strict=True)])
        for phase, t in seconds.items()
    }


def write_folder(
    root: Path,
    classes: int,
    images: dict[str, int],
    size: tuple[int, int],
    seed: int = 0,
    fixed_colours: bool = False,
) -> None:
    """``<root>/<split>/{images,masks}`` with ``images[split]`` PNGs of ``size`` (height, width)
    each, and ``classes.yaml``: 16 Voronoi regions per image, one class each, drawn in a colour
    per class with noise. ``fixed_colours``: a class has the same colour in every image (a
    model learns the classes), else each image draws its own (only outlines are learnable)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    palette = rng.integers(0, 256, (classes, 3))
    for split, count in images.items():
        for i in range(count):
            centres = rng.uniform(0, 1, size=(16, 2)) * size
            distance = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
            labels = rng.integers(0, classes, 16)[np.argmin(distance, axis=-1)].astype(np.uint8)
            colours = palette if fixed_colours else rng.integers(0, 256, (classes, 3))
            image = np.clip(colours[labels] + rng.normal(0, 6, (*size, 3)), 0, 255)
            for kind, array in (("images", image.astype(np.uint8)), ("masks", labels[..., None])):
                path = root / split / kind / f"{i:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tf.io.encode_png(array).numpy())
    names = ", ".join(f"c{c}" for c in range(classes))
    (root / "classes.yaml").write_text(f"classes: [{names}]\n")


def interleaved(
    variants: dict[str, Any], rounds: int, measure: Callable[[str, Any, int], Any]
) -> dict[str, list[Any]]:
    """``measure(name, variant, round)`` of every variant, alternating over ``rounds`` (each
    round measures every variant once: a machine's slow spell falls on all of them alike),
    printing each result; the results by variant, in round order."""
    results: dict[str, list[Any]] = {name: [] for name in variants}
    for round_index in range(rounds):
        for name, variant in variants.items():
            results[name].append(measure(name, variant, round_index))
            print(name, results[name][-1], flush=True)
    return results
