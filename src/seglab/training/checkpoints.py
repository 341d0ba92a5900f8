"""Per-epoch checkpoints: the last epoch and the best one by a monitored metric.

A checkpoint is the model weights, the optimizer's variables and ``state.json`` (epoch, the
epoch's logged metrics, the selection state). Saving goes to a temporary directory renamed into
place, so a run killed mid-save keeps its previous checkpoint whole.

Selecting the best epoch. The monitor (default ``val/min_iou``) can tie for many epochs: on a
dataset where some class is never segmented it is 0 from the first epoch to the last, and a
strict "improves" rule would keep the untrained first epoch as the best model. So values within
``tie_tolerance`` of the selected epoch's count as a tie, broken by ``tie_breaker`` (default
``val/miou``, higher is better). A tie may not drift: a tying epoch must also be within
``tie_tolerance`` of the best monitor value seen so far.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from seglab import schema
from seglab.core.checks import check_choice

MODES = ("max", "min")


@dataclass(frozen=True)
class CheckpointState:
    """What ``state.json`` holds.

    Attributes:
        epoch: 1-based epoch the checkpoint was taken after.
        metrics: The metrics logged for that epoch.
        best: Monitored value of the selected (best) epoch.
        best_epoch: The selected epoch.
        best_tie: Tie-breaker value of the selected epoch.
        peak: Best monitored value seen so far (bounds the drift of ties).
    """

    epoch: int
    metrics: dict[str, float]
    best: float
    best_epoch: int
    best_tie: float = math.nan
    peak: float = math.nan


def check_selection(mode: str, tie_tolerance: float) -> None:
    """Raises naming the option on a checkpoint mode or tie tolerance the selection cannot use
    (the trainer checks them when it is configured, before a run starts)."""
    check_choice("checkpoint.mode", mode, MODES)
    if not tie_tolerance >= 0:
        raise ValueError(f"checkpoint.tie_tolerance must be >= 0, got {tie_tolerance}")


def check_metric_names(monitor: str, tie_breaker: str, logged: Collection[str]) -> None:
    """Raises naming the option when the checkpoint monitor or tie-breaker is not among the
    ``logged`` metric names (a run checks this before it starts, and each epoch again)."""
    for option, key in (
        ("checkpoint.monitor", monitor),
        ("checkpoint.tie_breaker", tie_breaker),
    ):
        if key not in logged:
            raise ValueError(
                f"{option}={key!r} is not a logged metric; choose one of {sorted(logged)}"
            )


class Checkpointer:
    """Writes ``<directory>/last`` every epoch and ``<directory>/best`` when an epoch is selected.

    Args:
        directory: Where this run's checkpoints live (``None``: nowhere; the selection and the
            best epoch's weights are kept in memory only).
        monitor: Metric key to select the best epoch by (default: the worst class's IoU).
        mode: ``max`` or ``min`` for ``monitor``.
        tie_breaker: Metric that decides between epochs whose monitor ties (higher is better).
        tie_tolerance: Monitor values this close (in the monitor's units) tie; 0: exact ties
            only. Set it to 0 for a monitor whose scale is not IoU's, such as a loss.
    """

    def __init__(
        self,
        directory: str | Path | None,
        monitor: str = schema.VAL_MIN_IOU,
        mode: str = "max",
        tie_breaker: str = schema.VAL_MIOU,
        tie_tolerance: float = 0.01,
    ) -> None:
        check_selection(mode, tie_tolerance)
        self.directory = None if directory is None else Path(directory)
        self.monitor = monitor
        self.mode = mode
        self.tie_breaker = tie_breaker
        self.tie_tolerance = tie_tolerance
        self.best = math.nan
        self.best_epoch = 0
        self.best_tie = math.nan
        self.peak = math.nan
        # The best epoch's weights when it was saved by this process: restoring them from
        # memory is exact and skips reading the file back at the end of the run.
        self._best_weights: list[np.ndarray] | None = None

    def selects(self, value: float, tie_value: float) -> bool:
        """Whether an epoch with monitor ``value`` and tie-breaker ``tie_value`` becomes the
        best: it beats the selected epoch by more than the tolerance, or ties it (and the peak)
        and has the higher tie-breaker. A NaN monitor never selects."""
        if math.isnan(value):
            return False
        if self.best_epoch == 0:
            return True
        gain = self.sign * (value - self.best)
        if gain > self.tie_tolerance:
            return True
        ties = (
            gain >= -self.tie_tolerance and self.sign * (value - self.peak) >= -self.tie_tolerance
        )
        return ties and (tie_value > self.best_tie or math.isnan(self.best_tie))

    @property
    def sign(self) -> float:
        """+1 when a higher monitor is better (``mode=max``), -1 otherwise."""
        return 1.0 if self.mode == "max" else -1.0

    def consider(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Updates the selection with one epoch's metrics; returns whether it is the new best."""
        check_metric_names(self.monitor, self.tie_breaker, metrics.keys())
        value, tie_value = float(metrics[self.monitor]), float(metrics[self.tie_breaker])
        selected = self.selects(value, tie_value)
        if selected:
            self.best, self.best_epoch, self.best_tie = value, epoch, tie_value
        if math.isnan(self.peak) or self.sign * (value - self.peak) > 0:
            self.peak = value  # a NaN value never passes the comparison
        return selected

    def save(self, model: keras.Model, epoch: int, metrics: Mapping[str, float]) -> None:
        """Saves ``last`` (and ``best`` if this epoch is selected, see :meth:`selects`)."""
        selected = self.consider(epoch, metrics)
        state = CheckpointState(
            epoch,
            {k: float(v) for k, v in metrics.items()},
            self.best,
            self.best_epoch,
            self.best_tie,
            self.peak,
        )
        self._write(model, state, "last")
        if selected:
            self._write(model, state, "best")
            self._best_weights = model.get_weights()

    @property
    def folder(self) -> Path:
        """The checkpoint folder; raises when the checkpoints are kept in memory only."""
        if self.directory is None:
            raise RuntimeError("these checkpoints are kept in memory: there is no folder")
        return self.directory

    def _write(self, model: keras.Model, state: CheckpointState, name: str) -> None:
        if self.directory is None:
            return
        final = self.directory / name
        partial = self.directory / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        model.save_weights(partial / "model.weights.h5")
        if model.optimizer is not None and model.optimizer.built:
            arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
            np.savez(partial / "optimizer.npz", **arrays)  # type: ignore[arg-type]
        (partial / "state.json").write_text(json.dumps(state.__dict__, indent=2))
        old = self.directory / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def read_state(self, name: str = "last") -> CheckpointState:
        """The ``last`` (or ``best``) checkpoint's state (no model needed); a file that is not
        a checkpoint's state is refused naming it."""
        path = self.folder / name / "state.json"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from in {path.parent}")
        try:
            return CheckpointState(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise ValueError(f"checkpoint file {path} is damaged: {error}") from None

    def verify(self, name: str = "last") -> CheckpointState:
        """Reads every file of the ``last`` (or ``best``) checkpoint without a model: its state,
        every weight array and the optimizer's arrays. A damaged file (truncated by a full disk
        or a copy, edited) is refused naming it, before a run is reopened on it."""
        state = self.read_state(name)
        folder = self.folder / name
        weights = folder / "model.weights.h5"
        try:
            import h5py  # Keras' own weights format

            with h5py.File(weights, "r") as file:
                file.visititems(
                    lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None
                )
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"checkpoint file {weights} is damaged: {error}") from None
        optimizer = folder / "optimizer.npz"
        if optimizer.is_file():
            try:
                with np.load(optimizer) as arrays:
                    for key in arrays.files:
                        arrays[key]
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                raise ValueError(f"checkpoint file {optimizer} is damaged: {error}") from None
        return state

    def restore(self, model: keras.Model, optimizer: bool = True) -> CheckpointState:
        """Loads ``last`` into a compiled ``model`` (weights and, unless ``optimizer`` is false,
        the optimizer's state) and the best-so-far."""
        state = self.read_state()
        last = self.folder / "last"
        saved = last / "optimizer.npz"
        has_optimizer = optimizer and saved.is_file()
        # Built first, or load_weights warns that it skips the optimizer (once only: the loss
        # scale optimizer of mixed precision would add its variables again).
        if has_optimizer and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        with warnings.catch_warnings():  # the file's optimizer state, when it is not wanted
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model.load_weights(last / "model.weights.h5")
        if has_optimizer:
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
        self.best_tie, self.peak = state.best_tie, state.peak
        return state

    def restore_best(self, model: keras.Model) -> int:
        """Loads the ``best`` checkpoint's weights into ``model``; returns its epoch.

        When no epoch was selected (the monitor was NaN throughout), the ``last`` checkpoint
        stands in for it. The weights come from memory when this process saved the best
        checkpoint (they are what it wrote), else from the file; in memory only, with no epoch
        selected, the model keeps its weights and the epoch is 0.
        """
        if self._best_weights is not None:
            model.set_weights(self._best_weights)
            return self.best_epoch
        if self.directory is None:
            return 0
        name = "best" if (self.folder / "best").is_dir() else "last"
        model.load_weights(self.folder / name / "model.weights.h5")
        return self.read_state(name).epoch
