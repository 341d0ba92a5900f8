"""Per-epoch checkpoints: the last epoch and the best one by a monitored metric.

A checkpoint is the model weights, the optimizer's variables and ``state.json`` (epoch, the
epoch's logged metrics, the best monitored value so far). Saving goes to a temporary directory
renamed into place, so a run killed mid-save keeps its previous checkpoint whole.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from seglab.checks import check_choice

MODES = ("max", "min")


@dataclass(frozen=True)
class CheckpointState:
    """What ``state.json`` holds.

    Attributes:
        epoch: 1-based epoch the checkpoint was taken after.
        metrics: The metrics logged for that epoch.
        best: Best monitored value so far.
        best_epoch: Epoch of ``best``.
    """

    epoch: int
    metrics: dict[str, float]
    best: float
    best_epoch: int


class Checkpointer:
    """Writes ``<directory>/last`` every epoch and ``<directory>/best`` when the monitor improves.

    Args:
        directory: Where this run's checkpoints live.
        monitor: Metric key to select the best epoch by (default: the worst class's IoU).
        mode: ``max`` or ``min``.
    """

    def __init__(self, directory: str | Path, monitor: str = "val/min_iou", mode: str = "max"):
        check_choice("trainer.checkpoint_mode", mode, MODES)
        self.directory = Path(directory)
        self.monitor = monitor
        self.mode = mode
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = 0

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value > self.best if self.mode == "max" else value < self.best

    def save(self, model: keras.Model, epoch: int, metrics: Mapping[str, float]) -> None:
        """Saves ``last`` (and ``best`` if the monitored metric improved)."""
        if self.monitor not in metrics:
            raise ValueError(
                f"trainer.checkpoint_monitor={self.monitor!r} is not a logged metric; "
                f"choose one of {sorted(metrics)}"
            )
        value = float(metrics[self.monitor])
        improved = self._improves(value)
        if improved:
            self.best, self.best_epoch = value, epoch
        state = CheckpointState(
            epoch, {k: float(v) for k, v in metrics.items()}, self.best, self.best_epoch
        )
        self._write(model, state, "last")
        if improved:
            self._write(model, state, "best")

    def _write(self, model: keras.Model, state: CheckpointState, name: str) -> None:
        final = self.directory / name
        partial = self.directory / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        model.save_weights(partial / "model.weights.h5")
        if model.optimizer is not None and model.optimizer.built:
            arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
            np.savez(partial / "optimizer.npz", **arrays)
        (partial / "state.json").write_text(json.dumps(state.__dict__, indent=2))
        old = self.directory / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def read_state(self, name: str = "last") -> CheckpointState:
        """The ``last`` (or ``best``) checkpoint's state (no model needed)."""
        path = self.directory / name / "state.json"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from in {path.parent}")
        return CheckpointState(**json.loads(path.read_text()))

    def restore(self, model: keras.Model) -> CheckpointState:
        """Loads ``last`` into a compiled ``model`` (weights and optimizer) and the best-so-far."""
        state = self.read_state()
        last = self.directory / "last"
        model.load_weights(last / "model.weights.h5")
        saved = last / "optimizer.npz"
        if saved.is_file():
            model.optimizer.build(model.trainable_variables)
            with np.load(saved) as arrays:
                values = [arrays[f"v{i}"] for i in range(len(arrays.files))]
            variables = model.optimizer.variables
            if len(values) != len(variables):
                raise ValueError(
                    f"checkpoint {saved} has {len(values)} optimizer variables, the optimizer "
                    f"{len(variables)}: was the model or optimizer config changed?"
                )
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        self.best, self.best_epoch = state.best, state.best_epoch
        return state

    def restore_best(self, model: keras.Model) -> int:
        """Loads the ``best`` checkpoint's weights into ``model``; returns its epoch.

        When no epoch improved the monitor (it was NaN throughout), the ``last`` checkpoint
        stands in for it.
        """
        name = "best" if (self.directory / "best").is_dir() else "last"
        model.load_weights(self.directory / name / "model.weights.h5")
        return self.read_state(name).epoch

    def has_checkpoint(self) -> bool:
        return (self.directory / "last" / "state.json").is_file()
