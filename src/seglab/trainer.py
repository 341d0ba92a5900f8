"""The shared trainer: compile, fit, and one record of loss and per-class scores per epoch."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism: no API

from seglab import signals
from seglab.augment import Augmenter
from seglab.checkpoints import MODES, Checkpointer
from seglab.checks import check_choice
from seglab.data import SegmentationData, batches
from seglab.losses import CrossEntropy, SegmentationLoss
from seglab.metrics import (
    ConfusionMatrix,
    PerClassLoss,
    Scores,
    ValidationOnly,
    scores_from_confusion,
)

CLASS_WEIGHT_ERROR = (
    "Keras' class_weight is not supported: fit(class_weight=...) looks up one weight per "
    "sample from its label and, on (B, H, W) segmentation masks, fails in Keras 3 with "
    "'TypeError: only 0-dimensional arrays can be converted to Python scalars'. seglab applies "
    "class weights itself: as per-pixel sample_weight maps for pixelwise losses and inside the "
    "mean over classes for region losses. Choose a scheme with "
    "class_weights=<none|inverse_frequency|inverse_sqrt|median_frequency|enet|"
    "effective_number|manual|per_batch> (manual: class_weights.weights=[...])."
)


def reject_keras_class_weight(config: Mapping[str, Any], path: str = "") -> None:
    """Raises :data:`CLASS_WEIGHT_ERROR` if any key of a (nested) config is ``class_weight``."""
    for key, value in config.items():
        if key == "class_weight":
            raise ValueError(f"config key {path}{key}: {CLASS_WEIGHT_ERROR}")
        if isinstance(value, Mapping):
            reject_keras_class_weight(value, f"{path}{key}.")


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced.

    Attributes:
        epoch: 1-based epoch number (the MLflow step).
        train_loss: Mean training loss over the epoch's batches.
        val_loss: Loss over the whole validation set.
        val_ce: Unweighted cross-entropy over the validation set (comparable across losses
            and class weights).
        loss_share: Each class's fraction of ``val_loss`` (pixel losses: the pixels of that
            true class; region losses: that class's term).
        confusion: Validation confusion matrix over every validation pixel.
        scores: Per-class scores derived from ``confusion``.
        seconds: Wall time of the epoch, validation included.
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_ce: float
    loss_share: np.ndarray
    confusion: np.ndarray
    scores: Scores
    seconds: float


class EpochRecorder(keras.callbacks.Callback):
    """Turns each epoch's logs and validation confusion matrix into an :class:`EpochRecord`.

    Keras' ``fit`` runs the validation pass, which resets the model's metrics first, right
    before ``on_epoch_end``: at that point the confusion matrix holds exactly the validation
    set (``tests/test_trainer.py`` checks this against an independent prediction pass).
    """

    def __init__(
        self,
        confusion: ConfusionMatrix,
        loss_terms: PerClassLoss,
        ce: PerClassLoss,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        super().__init__()
        self.confusion = confusion
        self.loss_terms = loss_terms
        self.ce = ce
        self.on_epoch = on_epoch
        self.records: list[EpochRecord] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        cm = self.confusion.matrix()
        record = EpochRecord(
            epoch=epoch + 1,
            train_loss=float(logs["loss"]),
            val_loss=float(logs["val_loss"]),
            val_ce=float(self.ce.result()),
            loss_share=self.loss_terms.shares(),
            confusion=cm,
            scores=scores_from_confusion(cm),
            seconds=time.perf_counter() - self._start,
        )
        self.records.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)


class ValidationGate(keras.callbacks.Callback):
    """Lets seglab's metrics count during the validation pass only (see
    ``metrics.ValidationOnly``): Keras traces the test step inside it, the training step
    outside, so training steps carry no metric work."""

    def __init__(self, metrics: Sequence[ValidationOnly]) -> None:
        super().__init__()
        self.metrics = metrics
        self.on_test_end()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        for metric in self.metrics:
            metric.validating = True

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        for metric in self.metrics:
            metric.validating = False


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss by raising, so the run ends FAILED with the
    reason, the metrics logged so far stay, and the last good checkpoint is not overwritten
    (Keras' ``TerminateOnNaN`` would instead finish the epoch and validate the broken model)."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {float(loss)} at batch {batch + 1} of epoch "
                f"{self.epoch + 1}; lower the learning rate or check the data and loss"
            )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("val_loss")
        if loss is not None and not np.isfinite(loss):
            raise FloatingPointError(f"validation loss became {float(loss)} at epoch {epoch + 1}")


class SignalGuard(keras.callbacks.Callback):
    """Ends training at the next batch once Ctrl-C or SIGTERM has arrived (see
    :mod:`seglab.signals`; :meth:`Trainer.fit` defers signals, so this is where they land)."""

    def check(self, *args: Any, **kwargs: Any) -> None:
        signals.raise_if_received()

    on_train_batch_end = on_test_batch_end = on_epoch_end = check


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, NumPy and TensorFlow; ``deterministic`` also makes TF ops deterministic.

    With both, the same seed on the same machine and TensorFlow build gives the same per-class
    IoU history. Without op determinism, parallel reductions may differ in the last bits.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # the jobs of a multirun share this process: one job's setting must not leak on
        tf_config.disable_op_determinism()


def set_precision(mixed: bool) -> None:
    """``mixed_float16`` (GPU speed-up) or ``float32`` for the models built after this call.

    Set on every run, so one mixed-precision job of a multirun does not leak into the next.
    Under ``mixed_float16`` Keras wraps the optimizer in a ``LossScaleOptimizer`` at compile;
    the U-Net's output activation and seglab's losses compute in float32.
    """
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


STRATEGIES = ("default", "mirrored")
MULTI_WORKER_ERROR = (
    "trainer.strategy='multi_worker' is not available: Keras 3's model.fit fails under "
    "tf.distribute.MultiWorkerMirroredStrategy ('Attempt to convert a value (PerReplica...)', "
    "keras-team/keras#20585, tensorflow/tensorflow#72388; reproduced here with two workers, "
    "see tests/test_strategy.py). Use trainer.strategy=mirrored for several devices of one "
    "host, and a Hydra launcher (hydra/launcher=slurm) to spread a sweep's jobs over hosts."
)


def check_strategy(name: str) -> None:
    """Raises naming ``trainer.strategy`` unless ``name`` is one of :data:`STRATEGIES`."""
    if name == "multi_worker":
        raise ValueError(MULTI_WORKER_ERROR)
    check_choice("trainer.strategy", name, STRATEGIES)


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name`` (one of :data:`STRATEGIES`).

    ``mirrored`` replicates the model on every GPU, or on every logical CPU device when there is
    no GPU (how the tests run it on CPU).
    """
    check_strategy(name)
    if name == "default":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


class Trainer:
    """Fits a segmentation model and records the validation scores of every epoch.

    Args:
        optimizer: Factory of a fresh Keras optimizer (a Hydra ``_partial_``).
        epochs: Number of epochs.
        batch_size: Images per batch.
        seed: Seed of Python, NumPy, TensorFlow, the shuffle order and augmentation.
        shuffle: Reshuffle the training set every epoch (``False``: file order, e.g. to compare
            strategies, since ``tf.distribute`` rebuilds the pipeline and its shuffle order).
        deterministic: Also make TensorFlow ops deterministic (see :func:`seed_everything`).
        mixed_precision: Train under ``mixed_float16`` (see :func:`set_precision`); meant for
            GPUs, slower on CPU.
        steps_per_execution: Batches run per ``tf.function`` call (fewer Python round trips).
        jit_compile: Compile the train step with XLA (see the README's Performance section).
        resume: ``False``, ``True`` (the latest unfinished run of the experiment) or a run id:
            continue that run from its last checkpoint.
        checkpoint_monitor: Metric that selects the ``best`` checkpoint.
        checkpoint_mode: ``max`` or ``min`` for that metric.
        checkpoint_tie_breaker: Metric (higher is better) that decides between epochs whose
            monitor ties, so a monitor stuck at 0 cannot keep the first epoch as the best.
        checkpoint_tie_tolerance: Monitor values this close count as a tie (see
            :class:`seglab.checkpoints.Checkpointer`).
        strategy: ``default`` (one device) or ``mirrored`` (every GPU, or every logical CPU);
            ``batch_size`` is the global batch, split across replicas. Build the model inside
            :meth:`scope`. ``multi_worker`` is refused (see :data:`MULTI_WORKER_ERROR`).
        class_weight: Keras' argument; always rejected with an explanation.
    """

    def __init__(
        self,
        optimizer: Callable[[], keras.optimizers.Optimizer],
        epochs: int = 10,
        batch_size: int = 16,
        seed: int = 0,
        shuffle: bool = True,
        deterministic: bool = False,
        mixed_precision: bool = False,
        steps_per_execution: int = 1,
        jit_compile: bool = False,
        resume: bool | str = False,
        checkpoint_monitor: str = "val/min_iou",
        checkpoint_mode: str = "max",
        checkpoint_tie_breaker: str = "val/miou",
        checkpoint_tie_tolerance: float = 0.01,
        strategy: str = "default",
        class_weight: Any = None,
    ) -> None:
        check_strategy(strategy)
        if jit_compile and deterministic:
            raise ValueError(
                "trainer.jit_compile=true and trainer.deterministic=true: Keras turns XLA off "
                "while TensorFlow ops are deterministic; choose one"
            )
        if class_weight is not None:
            raise ValueError(f"trainer.class_weight: {CLASS_WEIGHT_ERROR}")
        check_choice("trainer.checkpoint_mode", checkpoint_mode, MODES)
        if epochs < 1:
            raise ValueError(f"trainer.epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"trainer.batch_size must be >= 1, got {batch_size}")
        self.optimizer = optimizer
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.deterministic = deterministic
        self.mixed_precision = mixed_precision
        self.resume = resume
        self.checkpoint_monitor = checkpoint_monitor
        self.checkpoint_mode = checkpoint_mode
        self.checkpoint_tie_breaker = checkpoint_tie_breaker
        self.checkpoint_tie_tolerance = checkpoint_tie_tolerance
        self.steps_per_execution = steps_per_execution
        self.jit_compile = jit_compile
        self.strategy = strategy
        self._distribution: tf.distribute.Strategy | None = None

    @property
    def distribution(self) -> tf.distribute.Strategy:
        """The ``tf.distribute`` strategy, made on first use (after the devices are set up)."""
        if self._distribution is None:
            self._distribution = distribution_strategy(self.strategy)
        return self._distribution

    def scope(self) -> Any:
        """Context in which to build the model, so its variables live on every replica."""
        return self.distribution.scope()

    @staticmethod
    def check_weighting(
        loss: SegmentationLoss, per_batch: bool, image_boost: tuple[int, float] | None
    ) -> None:
        """Per-batch and image-level weights are pixel weight maps: pixelwise losses only."""
        if (per_batch or image_boost) and not loss.pixel_weighted:
            option = "per_batch" if per_batch else "image_boost_class"
            raise ValueError(
                f"class_weights {option} builds per-pixel weight maps, but loss {loss.name!r} "
                "takes no pixel weights; use it with a pixelwise loss (ce, focal, ce_dice)"
            )

    def streams(
        self,
        data: SegmentationData,
        loss: SegmentationLoss,
        *,
        class_weights: np.ndarray | None = None,
        per_batch: bool = False,
        image_boost: tuple[int, float] | None = None,
        augment: Augmenter | None = None,
    ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        """The batched training and validation streams :meth:`fit` trains on.

        The training stream is shuffled, augmented and image-boosted; the validation stream is
        none of these: it only carries the same pixel weights, so ``val/loss`` is the objective.

        Under several replicas no replica may get an empty batch (oneDNN's fused convolution
        fails on one on AMD CPUs, "input depth must be evenly divisible by filter depth"), and
        ``tf.distribute`` splits a batch of r images as evenly as it can, so a last batch of
        fewer images than replicas would leave one empty. Training drops such a batch (a
        different one every epoch when shuffled); validation, which must see every image,
        uses the batch size :func:`replica_safe_batch_size` picks. ``batch_size`` must be a
        multiple of the replica count.
        """

        self.check_weighting(loss, per_batch, image_boost)
        replicas = self.distribution.num_replicas_in_sync
        if self.batch_size % replicas:
            raise ValueError(
                f"trainer.batch_size={self.batch_size} is not a multiple of the {replicas} "
                f"replicas of trainer.strategy={self.strategy!r}: the global batch is split "
                "evenly over them"
            )
        if data.num_train < self.batch_size and data.num_train % replicas:
            raise ValueError(
                f"the training split's {data.num_train} images make one batch that "
                f"{replicas} replicas cannot share evenly; use trainer.batch_size <= "
                f"{data.num_train - data.num_train % replicas}"
            )
        stream = partial(
            batches,
            class_weights=class_weights if loss.pixel_weighted else None,
            batch_weights=per_batch,
            num_classes=data.num_classes,
            ignore_index=data.ignore_index,
        )
        train = stream(
            data.train,
            self.batch_size,
            shuffle_seed=self.seed,
            shuffle=self.shuffle,
            augment=augment,
            image_boost=image_boost,
            min_batch=replicas,
        )
        val_batch = replica_safe_batch_size(data.num_val, self.batch_size, replicas)
        return train, stream(data.val, val_batch)

    def fit(
        self,
        model: keras.Model,
        loss: SegmentationLoss,
        data: SegmentationData,
        *,
        class_weights: np.ndarray | None = None,
        per_batch: bool = False,
        image_boost: tuple[int, float] | None = None,
        augment: Augmenter | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        resume_from: Checkpointer | None = None,
        class_weight: Any = None,
    ) -> list[EpochRecord]:
        """Trains ``model`` on ``data.train`` and scores ``data.val`` after every epoch.

        Args:
            model: The model to train.
            loss: A seglab loss (already holding its class weights if it is a region loss).
            data: Train and val streams.
            class_weights: Dataset class weights (C,); a pixelwise loss gets them as
                per-pixel ``sample_weight`` maps, on the train and val streams alike.
            per_batch: Recompute the weights from each batch (the pitfall, pixel losses only).
            image_boost: ``(class index, factor)`` image-level weight, training stream only.
            augment: Joint augmentation of the training stream (validation never is).
            on_epoch: Called with each epoch's record.
            callbacks: Extra Keras callbacks.
            resume_from: Continue from this checkpointer's ``last`` checkpoint (weights,
                optimizer state, epoch); records then cover the remaining epochs only.
            class_weight: Keras' argument; always rejected with an explanation.

        Raises:
            FloatingPointError: When a training or validation loss becomes NaN or Inf.
        """
        if class_weight is not None:
            raise ValueError(f"Trainer.fit(class_weight=...): {CLASS_WEIGHT_ERROR}")
        num_classes = data.num_classes
        with self.scope():  # metric and optimizer variables, on every replica
            confusion = ConfusionMatrix(num_classes, data.ignore_index)
            loss_terms = PerClassLoss(loss, num_classes, name="loss_terms")
            ce = PerClassLoss(CrossEntropy(data.ignore_index), num_classes, False, name="ce")
            gate = ValidationGate([confusion, loss_terms, ce])  # before Keras traces a step
            model.compile(
                optimizer=self.optimizer(),
                loss=loss,
                metrics=[confusion, ce],
                weighted_metrics=[loss_terms],  # Keras passes sample_weight to these only
                steps_per_execution=self.steps_per_execution,
                jit_compile=self.jit_compile,
            )
        train, val = self.streams(
            data,
            loss,
            class_weights=class_weights,
            per_batch=per_batch,
            image_boost=image_boost,
            augment=augment,
        )
        initial_epoch = 0 if resume_from is None else resume_from.restore(model).epoch
        recorder = EpochRecorder(confusion, loss_terms, ce, on_epoch)
        with signals.deferred():  # a signal ends training between batches, never inside a write
            model.fit(
                train,
                validation_data=val,
                epochs=self.epochs,
                initial_epoch=initial_epoch,
                shuffle=False,  # the tf.data stream shuffles itself, seeded
                callbacks=[
                    gate,
                    NonFiniteGuard(),
                    SignalGuard(),
                    recorder,
                    *callbacks,
                ],
                verbose=0,
            )
        return recorder.records


def replica_safe_batch_size(num_images: int, batch_size: int, replicas: int) -> int:
    """The validation batch size, closest to ``batch_size``, that several replicas can run.

    Two constraints, both measured with Keras 3 on two logical CPU devices: Keras builds the
    model by reducing the *first* batch across replicas, which fails unless that batch splits
    evenly ("AddN must have the same size and shape"), so the batch size is a multiple of
    ``replicas``; and no replica may get an empty share (see :meth:`Trainer.streams`), so the
    last batch is full or holds at least ``replicas`` images. ``batch_size`` itself when it
    fits, else the nearest smaller multiple of ``replicas`` that does, else the nearest larger.

    Raises:
        ValueError: When no batch size fits (e.g. 3 images over 2 replicas).
    """
    if replicas == 1:
        return batch_size

    def fits(size: int) -> bool:
        if size >= num_images:  # one batch, which is also the first
            return num_images % replicas == 0
        return num_images % size == 0 or num_images % size >= replicas

    top = max(batch_size, num_images + replicas)
    candidates = [*range(batch_size, 0, -1), *range(batch_size + 1, top + 1)]
    sizes = [size for size in candidates if size % replicas == 0 and fits(size)]
    if not sizes:
        raise ValueError(
            f"the validation split's {num_images} images cannot be batched for {replicas} "
            "replicas (every batch must give every replica an image, and the first batch the "
            f"same number each); use a validation split whose size is a multiple of {replicas}"
        )
    return sizes[0]


def predict_samples(
    model: keras.Model, data: SegmentationData, count: int, prefer_class: int, pool: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``count`` validation (image, truth, prediction) triples for overlays.

    Samples that contain ``prefer_class`` (usually the worst class) come first, so the figure
    shows where the failing class is missed.
    """
    images, truths = (
        np.stack(x) for x in zip(*data.val.take(pool).as_numpy_iterator(), strict=True)
    )
    order = np.argsort(~(truths == prefer_class).any(axis=(1, 2)), kind="stable")[:count]
    # Called directly, not with model.predict: under a tf.distribute strategy, predict would
    # split these few images over the replicas and could leave one with an empty batch.
    predictions = np.asarray(model(images[order], training=False)).argmax(axis=-1)
    return images[order], truths[order], predictions
