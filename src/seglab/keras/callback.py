"""seglab's diagnosis for anyone's ``model.fit``: per-class IoU beside the loss every epoch, the
loss share per class, the hidden-failure verdict, the per-class table, figures and per-image
evidence, logged to MLflow as a seglab run (``seglab report``, the HTML report and the notebook
read it like a run of ``seglab train``)."""

from __future__ import annotations

import atexit
import json
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any

import keras
import numpy as np

from seglab import schema
from seglab.core.checks import check_class_names
from seglab.core.records import EpochRecord
from seglab.core.verdicts import HiddenFailureRule
from seglab.figures.gallery import Gallery, check_gallery
from seglab.figures.style import displayable
from seglab.keras.validation import (
    OutputHead,
    ValidationPass,
    ValidationSet,
    model_loss,
    regularization,
)
from seglab.tracking.run_log import RunLog
from seglab.tracking.tracker import MlflowTracker
from seglab.training.checkpoints import check_metric_names, check_selection
from seglab.training.prediction import showing_first

BEST_WEIGHTS_FILE = "best_model/model.weights.h5"  # save_best: the best epoch's weights


class NumpyPredictor:
    """``predictor(images)``: a model's most probable class per pixel, ``int64 (N, H, W)``, by
    its own predict function (any Keras backend), in batches; the class probabilities of the
    last call are kept."""

    def __init__(self, model: keras.Model, head: OutputHead, batch_size: int) -> None:
        self.model = model
        self.head = head
        self.batch_size = batch_size
        self._probabilities: np.ndarray | None = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self._probabilities = np.concatenate(
            [
                self.head.probabilities(
                    self.model.predict_on_batch(images[i : i + self.batch_size])
                )
                for i in range(0, len(images), self.batch_size)
            ]
        )
        return self._probabilities.argmax(axis=-1)

    @property
    def probabilities(self) -> np.ndarray:
        """The last call's ``float32 (N, H, W, C)`` class probabilities."""
        if self._probabilities is None:
            raise RuntimeError("no batch predicted yet: call the predictor first")
        return self._probabilities


class SeglabCallback(keras.callbacks.Callback):
    """Logs seglab's per-class diagnosis of any Keras segmentation model to MLflow.

    Every epoch it predicts ``validation_data`` once and logs ``val/loss`` (the loss the model
    was compiled with) beside ``val/iou/<class>``, ``val/min_iou``, ``val/ce``, the per-class
    loss share and the hidden-failure verdict, prints the epoch line, and adds
    ``val/min_iou`` and ``val/miou`` (and ``val_loss`` when ``fit`` has no validation data) to
    the epoch's logs for the callbacks after it (``EarlyStopping(monitor="val/min_iou",
    mode="max")``). When training ends: the per-class table, the figures, the per-image counts,
    the verdict tags and the run's note. Pass the validation data to this callback only: giving
    it to ``fit`` too makes Keras predict it a second time.

    The run is the active MLflow run when there is one (its owner ends it), else a new run in
    ``experiment_name`` that ends with training: FINISHED, or FAILED with the reason when the
    callback stops it (a NaN loss, bad input). Used as a context manager, the run spans the
    block (several ``fit`` calls, such as a frozen then an unfrozen encoder, log one run) and
    ends FAILED or KILLED with the reason when the block raises::

        with SeglabCallback(val_ds, class_names=["bg", "road", "pole"], ignore_index=255) as cb:
            model.fit(train_ds, epochs=5, callbacks=[cb])
            model.fit(train_ds, initial_epoch=5, epochs=20, callbacks=[cb])

    Args:
        validation_data: A ``tf.data.Dataset`` of ``(images, masks[, sample_weight])``, batched
            or not, or a tuple of arrays; masks are integer ``(B, H, W)`` / ``(B, H, W, 1)`` or
            one-hot ``(B, H, W, C)`` (see :mod:`seglab.keras.validation`).
        class_names: One name per class index.
        ignore_index: Mask label that counts nowhere (``None``: every pixel counts).
        from_logits: The model outputs logits, not probabilities.
        output: ``softmax`` or ``sigmoid`` (one channel: the foreground of two classes).
        batch_size: Images per batch for arrays and unbatched datasets.
        experiment_name: MLflow experiment of a new run.
        tracking_uri: Store of a new run (``None``: ``$MLFLOW_TRACKING_URI``, else seglab's
            ``outputs/mlflow.db``).
        run_name: Name of a new run (``None``: the loss's name and a random suffix).
        params: The user's own configuration, logged as params (nested mappings flattened).
        seed: The seed the script set (``keras.utils.set_random_seed``), logged as
            ``trainer.seed``: the report takes runs that differ only in it as seeds of one
            configuration, with intervals over them.
        tags: Extra tags; ``seglab.loss``, ``seglab.class_weights`` and ``seglab.augment``
            group runs in the report (defaults: the loss's name, ``none``, ``none``).
        hidden_failure: Thresholds of the hidden-failure verdict (seglab's defaults).
        monitor: Metric that selects the best epoch (default: the worst class's IoU).
        mode: ``max`` or ``min`` for ``monitor``.
        restore_best: Load the best epoch's weights into the model when the run ends.
        save_best: Log the best epoch's weights as ``best_model/model.weights.h5``.
        gallery: Images per failure gallery every epoch (0: none; each costs a prediction of
            the first 16 validation images).
        overlays: Validation samples in ``figures/val_overlays.png``.

    Raises:
        ValueError: On a bad argument here; on masks with labels beyond ``class_names``, a
            model output whose channels or size do not fit the masks, before any run is created.
    """

    def __init__(
        self,
        validation_data: Any,
        class_names: Sequence[str],
        ignore_index: int | None = None,
        from_logits: bool = False,
        output: str = "softmax",
        *,
        batch_size: int = 8,
        experiment_name: str = "seglab",
        tracking_uri: str | None = None,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        tags: Mapping[str, str] | None = None,
        hidden_failure: HiddenFailureRule | None = None,
        monitor: str = schema.VAL_MIN_IOU,
        mode: str = "max",
        restore_best: bool = False,
        save_best: bool = False,
        gallery: int = 0,
        overlays: int = 6,
    ) -> None:
        super().__init__()
        self.class_names = check_class_names(class_names, "SeglabCallback class_names")
        num_classes = len(self.class_names)
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(
                f"SeglabCallback ignore_index={ignore_index} is the label of class "
                f"{self.class_names[ignore_index]!r}; choose a value outside "
                f"0..{num_classes - 1} (255 is usual) or None"
            )
        try:  # the checks of seglab train's checkpoint.* options, named as this class's
            check_selection(mode, 0.01)
            keys = schema.epoch_metric_keys(self.class_names)
            check_metric_names(monitor, schema.VAL_MIOU, keys)
        except ValueError as error:
            raise ValueError(str(error).replace("checkpoint.", "SeglabCallback ")) from None
        check_gallery(gallery, 1)
        if overlays < 1:
            raise ValueError(f"SeglabCallback overlays must be >= 1, got {overlays}")
        self.head = OutputHead(num_classes, output, from_logits)
        self.validation = ValidationSet(validation_data, num_classes, ignore_index, batch_size)
        self.ignore_index = ignore_index
        self.tracker = MlflowTracker(experiment_name, tracking_uri, run_name=run_name)
        self.user_params = dict(params or {})
        if seed is not None:
            self.user_params[schema.SEED_PARAM] = seed
        self.tags = dict(tags or {})
        self.rule = hidden_failure or HiddenFailureRule()
        self.monitor, self.mode = monitor, mode
        self.restore_best = restore_best
        self.save_best = save_best
        self.gallery_size = gallery
        self.overlays = overlays
        self.run_id: str | None = None  # the run it logs into, once training started
        self.records: list[EpochRecord] = []
        self.last_pass: ValidationPass | None = None
        self._log: RunLog | None = None
        self._stack = ExitStack()
        self._in_block = False
        self._epoch_started = 0.0

    # The run's lifecycle ------------------------------------------------------------------

    def __enter__(self) -> SeglabCallback:
        self._in_block = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._in_block = False
        if error is None:
            self._finish()
        else:
            self._close(error)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._log is not None:
            if self._in_block:  # a later fit of the block: the same run goes on
                self._log.epochs = self.params_epochs()
                return
            self._close(RuntimeError("fit stopped before training ended"))
        self._guarded(self._start)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._guarded(self._epoch, epoch, logs if logs is not None else {})

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._in_block:
            self._guarded(self._finish)

    def _guarded(self, step: Any, *args: Any) -> None:
        """Runs one step; when it raises, the run ends with the reason (then it re-raises)."""
        try:
            step(*args)
        except BaseException as error:
            self._close(error)
            raise

    def _close(self, error: BaseException | None) -> None:
        """Ends the block :meth:`_start` opened: the run ends FINISHED, or FAILED/KILLED with
        ``error``'s reason (an attached run only gets the reason)."""
        if self._log is None:
            return
        self._log = None
        atexit.unregister(self._at_exit)
        if error is None:
            self._stack.close()
        else:
            self._stack.__exit__(type(error), error, error.__traceback__)

    def _at_exit(self) -> None:
        self._close(RuntimeError("the process ended before training did"))

    # The steps --------------------------------------------------------------------------

    def params_epochs(self) -> int:
        """The epochs ``fit`` was asked for (the epoch lines print ``epoch 3/20``)."""
        return int((self.params or {}).get("epochs") or 0)

    def _start(self) -> None:
        """Checks the data against the model, then opens the run."""
        model = self.model
        self._check(model)
        import mlflow

        tracker, attach = self.tracker, None
        if (active := mlflow.active_run()) is not None:
            attach = active.info.run_id
            tracker = MlflowTracker(tracking_uri=mlflow.get_tracking_uri(), log_model=False)
            tracker.experiment_name = mlflow.get_experiment(active.info.experiment_id).name
            self.tracker = tracker
        self.records = []
        log = RunLog(
            tracker,
            self.class_names,
            None,
            epochs=self.params_epochs(),
            rule=self.rule,
            monitor=self.monitor,
            mode=self.mode,
            gallery=self.gallery(),
            predictor=lambda m: NumpyPredictor(m, self.head, self.validation.batch_size),
        )
        config = self.config(model)
        self._stack = ExitStack()
        self._stack.enter_context(
            log.open(
                self.run_tags(model), config, json.dumps(config, indent=2), attach_run_id=attach
            )
        )
        self._log = log
        self.run_id = tracker.run_id
        atexit.register(self._at_exit)

    def _check(self, model: keras.Model) -> None:
        """Every mask label, and the model's output and loss on the first batch, before a run."""
        first, labelled = None, 0
        for batch in self.validation.batches():  # reading a batch checks its labels
            first = first or batch
            labelled += int((batch.labels != self.validation.ignore_value).sum())
        if first is None:
            raise ValueError("SeglabCallback validation_data is empty")
        if not labelled:
            raise ValueError(
                "SeglabCallback validation_data has no labelled pixel: every pixel is "
                f"ignore_index={self.ignore_index}"
            )
        outputs = model.predict_on_batch(first.images)
        if isinstance(outputs, list | tuple | dict):
            raise ValueError(
                f"SeglabCallback needs a model with one output, this one has {len(outputs)}"
            )
        self.head.check(np.shape(outputs), first.labels.shape)
        try:
            model_loss(model, first, outputs)
        except Exception as error:  # a loss that cannot take these masks (an ignore label...)
            reason = str(error).strip().splitlines()[0][:300]
            raise ValueError(
                f"SeglabCallback: the model's loss fails on the validation masks: "
                f"{type(error).__name__}: {reason} (ignore_index={self.ignore_index}: does the "
                "loss ignore it too, e.g. SparseCategoricalCrossentropy(ignore_class=...)?)"
            ) from error

    def _epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        log = self._log
        if log is None:
            raise RuntimeError("SeglabCallback: no run is open (on_train_begin was not called)")
        train_loss = float(logs.get("loss", np.nan))
        if not np.isfinite(train_loss) and "loss" in logs:
            raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch + 1}")
        validation = self.validate(self.model)
        seconds = time.perf_counter() - self._epoch_started
        record = validation.record(epoch + 1, train_loss, seconds)
        if not np.isfinite(record.val_loss):
            raise FloatingPointError(
                f"validation loss became {record.val_loss} at epoch {epoch + 1}"
            )
        log.epoch(record, self.model)
        self.records.append(record)
        self.last_pass = validation
        logs.setdefault("val_loss", record.val_loss)
        logs[schema.VAL_MIN_IOU] = record.scores.min_iou
        logs[schema.VAL_MIOU] = record.scores.miou

    def validate(self, model: keras.Model) -> ValidationPass:
        """One pass of ``model`` over the validation data."""
        own_terms = self._has_class_terms(model)
        penalty = regularization(model) if own_terms else 0.0  # the weights do not change here
        validation = ValidationPass(self.head.num_classes, self.validation.ignore_value)
        for batch in self.validation.batches():
            outputs = model.predict_on_batch(batch.images)
            terms, loss = None, None
            if own_terms:  # the terms sum to the compiled loss: computed once, not twice
                per_class = model.loss.per_class(batch.targets, outputs, batch.weights)
                terms = keras.ops.convert_to_numpy(per_class)
                loss = float(terms.sum()) + penalty
            else:
                loss = model_loss(model, batch, outputs)
            validation.add(batch.labels, self.head.probabilities(outputs), loss, terms)
        return validation

    def _finish(self) -> None:
        """The end of the run: the summary from the last epoch's pass, the best weights."""
        log, validation = self._log, self.last_pass
        if log is None:
            return
        if not self.records or validation is None:  # no epoch ended: nothing to summarise
            self._close(None)
            return
        predict = log.predictor(self.model)
        images, truths = self.pool(64)
        order = showing_first(truths, self.records[-1].scores.worst_class, self.overlays)
        samples = (displayable(images[order]), truths[order], predict(images[order]))
        log.summarize(self.records, validation.per_image(), samples)
        best_epoch = log.checkpoints.best_epoch
        if self.save_best or self.restore_best:
            current = self.model.get_weights()
            log.checkpoints.restore_best(self.model)
            if self.save_best:
                self.tracker.log_written(self.model.save_weights, BEST_WEIGHTS_FILE)
            if not self.restore_best:
                self.model.set_weights(current)
        log.tracker.set_tags({schema.TAG_BEST_EPOCH: best_epoch})
        self._close(None)

    # What the run records about itself ---------------------------------------------------

    def pool(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``count`` validation images and their labels."""
        images, labels, seen = [], [], 0
        for batch in self.validation.batches():
            images.append(batch.images[: count - seen])
            labels.append(batch.labels[: count - seen])
            seen += len(images[-1])
            if seen >= count:
                break
        return np.concatenate(images), np.concatenate(labels)

    def gallery(self) -> Gallery | None:
        """The failure gallery over the first 16 validation images (``None``: ``gallery=0``)."""
        if not self.gallery_size:
            return None
        images, labels = self.pool(16)
        return Gallery(images, labels, len(self.class_names), self.gallery_size)

    def config(self, model: keras.Model) -> dict[str, Any]:
        """What the run logs as params: the callback's options, the model, its loss and
        optimizer, and the user's own ``params``."""
        optimizer = getattr(model, "optimizer", None)
        rate = getattr(optimizer, "learning_rate", None)
        return {
            **self.user_params,
            "callback": {
                "output": self.head.output,
                "from_logits": self.head.from_logits,
                "ignore_index": self.ignore_index,
                "batch_size": self.validation.batch_size,
                "monitor": self.monitor,
                "loss_share_of": "loss" if self._has_class_terms(model) else "ce",
            },
            "model": {"name": model.name, "parameters": model.count_params()},
            "loss": {"name": loss_name(model)},
            "optimizer": {
                "name": type(optimizer).__name__ if optimizer is not None else "none",
                "learning_rate": float(keras.ops.convert_to_numpy(rate))
                if rate is not None
                else "none",
            },
        }

    @staticmethod
    def _has_class_terms(model: keras.Model) -> bool:
        from seglab.losses import SegmentationLoss

        return isinstance(getattr(model, "loss", None), SegmentationLoss)

    def run_tags(self, model: keras.Model) -> dict[str, str]:
        """The axis tags the report groups by (the loss's name, unless ``tags`` names them)."""
        defaults = {"loss": loss_name(model), "class_weights": "none", "augment": "none"}
        tags = {schema.axis_tag(axis): defaults[axis] for axis in schema.AXES}
        return {**tags, **self.tags}


def loss_name(model: keras.Model) -> str:
    """The name of the loss ``model`` was compiled with (``none`` without one)."""
    loss = getattr(model, "loss", None)
    if loss is None:
        return "none"
    if isinstance(loss, str):
        return loss
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__))
