"""The shared trainer: compile, fit, and one record of loss and per-class scores per epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import keras
import tensorflow as tf

from seglab import schema, signals
from seglab.core.checks import check_choice
from seglab.core.class_weights import Weighting
from seglab.core.records import EpochRecord
from seglab.data.augment import Augmenter
from seglab.data.dataset import SegmentationData
from seglab.data.pipeline import batches
from seglab.losses import CrossEntropy, SegmentationLoss
from seglab.training.callbacks import (
    EpochRecorder,
    NonFiniteGuard,
    Progress,
    SignalGuard,
    ValidationGate,
)
from seglab.training.checkpoints import Checkpointer
from seglab.training.encoders import frozen_epochs, unfreeze
from seglab.training.keras_metrics import ConfusionMatrix, PerClassLoss
from seglab.training.runtime import (
    FLOAT32,
    PRECISIONS,
    built_in,
    check_strategy,
    distribution_strategy,
    resolve_precision,
    seed_everything,
    set_threads,
    usable_cores,
)


def checked_learning_rate(
    optimizer: Callable[[], keras.optimizers.Optimizer],
) -> Callable[[], keras.optimizers.Optimizer]:
    """The optimizer factory with a numeric ``learning_rate`` checked and made a float.

    Keras takes a negative rate (training then climbs the loss) and refuses an integer one
    (``learning_rate=1``) with a message that names no option; a schedule or callable passes.
    """
    keywords = getattr(optimizer, "keywords", None)
    if not isinstance(optimizer, partial) or not keywords or "learning_rate" not in keywords:
        return optimizer
    rate = keywords["learning_rate"]
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) or callable(rate):
        return optimizer
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise ValueError(
            f"trainer.optimizer.learning_rate must be a number > 0 (or a schedule), got {rate!r}"
        )
    return partial(optimizer.func, *optimizer.args, **{**keywords, "learning_rate": float(rate)})


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
        precision: ``float32``, ``bfloat16``, ``float16`` (with loss scaling) or ``auto``: the
            fastest the hardware computes (see :func:`resolve_precision`); resolved by
            :meth:`prepare` into :attr:`precision`.
        threads: TensorFlow's intra- and inter-op threads: ``auto`` (the cores this process may
            use, see :func:`usable_cores`) or a count (1 for each of several sweep jobs
            sharing a machine, e.g. with the joblib launcher).
        steps_per_execution: Batches run per ``tf.function`` call (fewer Python round trips).
        jit_compile: Compile the train step with XLA (see the README's Performance section).
        strategy: ``default`` (one device) or ``mirrored`` (every GPU, or every logical CPU);
            ``batch_size`` is the global batch, split across replicas. Build the model inside
            :meth:`scope`. ``multi_worker`` is refused (see
            :data:`seglab.training.runtime.MULTI_WORKER_ERROR`).
        progress_seconds: Off a terminal, a progress line every this many seconds of an epoch
            (0: none); a terminal shows a live line (see
            :class:`~seglab.training.callbacks.Progress`).

    :meth:`prepare` seeds and resolves the precision; build the model inside :meth:`building`.
    """

    def __init__(
        self,
        optimizer: Callable[[], keras.optimizers.Optimizer],
        epochs: int = 10,
        batch_size: int = 16,
        seed: int = 0,
        shuffle: bool = True,
        deterministic: bool = False,
        precision: str = "auto",
        threads: int | str = "auto",
        steps_per_execution: int = 1,
        jit_compile: bool = False,
        strategy: str = "default",
        progress_seconds: float = 30.0,
    ) -> None:
        check_strategy(strategy)
        if jit_compile and deterministic:
            raise ValueError(
                "trainer.jit_compile=true and trainer.deterministic=true: Keras turns XLA off "
                "while TensorFlow ops are deterministic; choose one"
            )
        if epochs < 1:
            raise ValueError(f"trainer.epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"trainer.batch_size must be >= 1, got {batch_size}")
        if steps_per_execution < 1:
            raise ValueError(f"trainer.steps_per_execution must be >= 1, got {steps_per_execution}")
        if not progress_seconds >= 0:
            raise ValueError(f"trainer.progress_seconds must be >= 0, got {progress_seconds}")
        if not 0 <= seed < 2**32:  # numpy's and TensorFlow's seed range
            raise ValueError(f"trainer.seed must be in [0, 2**32 - 1], got {seed}")
        self.optimizer = checked_learning_rate(optimizer)
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.deterministic = deterministic
        check_choice("trainer.precision", precision, PRECISIONS)
        if threads != "auto" and not (isinstance(threads, int) and threads >= 1):
            raise ValueError(f"trainer.threads must be 'auto' or an integer >= 1, got {threads!r}")
        self.requested_threads = threads
        self.requested_precision = precision
        self.precision = FLOAT32  # what prepare() resolves the request to
        self.threads = 0  # TensorFlow's threads, which prepare() sizes to the usable cores
        self.steps_per_execution = steps_per_execution
        self.jit_compile = jit_compile
        self.strategy = strategy
        self.progress_seconds = progress_seconds
        self._distribution: tf.distribute.Strategy | None = None

    def prepare(self) -> None:
        """Sizes TensorFlow's threads to the cores this process may use, starts Keras clean (the
        jobs of a multirun share one process), seeds Python, NumPy and TensorFlow (and makes
        TensorFlow ops deterministic when asked) and resolves the precision the model is built
        in (:meth:`building`)."""
        cores = usable_cores() if self.requested_threads == "auto" else self.requested_threads
        self.threads = set_threads(int(cores))
        keras.backend.clear_session()
        seed_everything(self.seed, self.deterministic)
        self.precision = resolve_precision(self.requested_precision)

    @property
    def distribution(self) -> tf.distribute.Strategy:
        """The ``tf.distribute`` strategy, made on first use (after the devices are set up)."""
        if self._distribution is None:
            self._distribution = distribution_strategy(self.strategy)
        return self._distribution

    def scope(self) -> Any:
        """Context in which variables live on every replica (the metrics', the optimizer's)."""
        return self.distribution.scope()

    @contextmanager
    def building(self) -> Iterator[None]:
        """Context in which to build the model: on every replica, in the run's precision
        (:func:`built_in`: nothing built later in the process, another run or a notebook's
        model, inherits it)."""
        with built_in(self.precision), self.scope():
            yield

    def streams(
        self,
        data: SegmentationData,
        weighting: Weighting | None = None,
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

        weighting = weighting or Weighting()
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
            class_weights=weighting.pixel_maps,
            batch_weights=weighting.per_batch,
            num_classes=data.num_classes,
            ignore_index=data.ignore_index,
        )
        train = stream(
            data.train,
            self.batch_size,
            shuffle_seed=self.seed,
            shuffle=self.shuffle,
            augment=augment,
            image_boost=weighting.image_boost,
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
        weighting: Weighting | None = None,
        augment: Augmenter | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        resume_from: Checkpointer | None = None,
    ) -> list[EpochRecord]:
        """Trains ``model`` on ``data.train`` and scores ``data.val`` after every epoch.

        Args:
            model: The model to train.
            loss: A seglab loss (already holding its class weights if it is a region loss).
            data: Train and val streams.
            weighting: The class weights, per-batch mode and image boost, already checked
                against ``loss`` (default: none; see :class:`seglab.class_weights.Weighting`).
            augment: Joint augmentation of the training stream (validation never is).
            on_epoch: Called with each epoch's record.
            callbacks: Extra Keras callbacks.
            resume_from: Continue from this checkpointer's ``last`` checkpoint (weights,
                optimizer state, epoch); records then cover the remaining epochs only, or, when
                none remain, are the last epoch's again (``on_epoch`` is not called).

        A model built with a frozen encoder (``model.encoder_freeze``) trains its first
        epochs so, then unfrozen with a fresh optimizer; a resume continues in its phase.

        Raises:
            FloatingPointError: When a training or validation loss becomes NaN or Inf.
        """
        num_classes = data.num_classes
        with self.scope():  # metric variables, on every replica
            confusion = ConfusionMatrix(num_classes, data.ignore_index)
            loss_terms = PerClassLoss(loss, num_classes, name="loss_terms")
            ce = PerClassLoss(CrossEntropy(data.ignore_index), num_classes, False, name="ce")
            gate = ValidationGate([confusion, loss_terms, ce])  # before Keras traces a step

        def compile_model() -> None:
            with self.scope():  # optimizer variables, on every replica
                model.compile(
                    optimizer=self.optimizer(),
                    loss=loss,
                    metrics=[confusion, ce],
                    weighted_metrics=[loss_terms],  # Keras passes sample_weight to these only
                    steps_per_execution=self.steps_per_execution,
                    jit_compile=self.jit_compile,
                )
                # Now, not in the first traced step: variables made there make TensorFlow
                # trace the training step a second time (Keras defers this by default).
                model.optimizer.build(model.trainable_variables)

        # A frozen encoder's phase: the checkpoint's epoch says which phase a resume is in,
        # before compiling, so the optimizer has the variables the checkpoint saved.
        frozen = frozen_epochs(model)
        started_at = 0 if resume_from is None else resume_from.read_state().epoch
        if frozen and started_at >= frozen:
            unfreeze(model)
        compile_model()
        train, val = self.streams(data, weighting or Weighting.for_loss(loss), augment)
        # At the end of the frozen epochs the optimizer starts afresh, as it does unresumed.
        fresh = bool(frozen) and started_at == frozen
        state = None if resume_from is None else resume_from.restore(model, optimizer=not fresh)
        initial_epoch = 0 if state is None else state.epoch
        recorder = EpochRecorder(confusion, loss_terms, ce, on_epoch)
        if state is not None and initial_epoch >= self.epochs:
            # Stopped after its last epoch, in the end of the run: only that is left to do, on
            # the last epoch's record, its validation pass run again on the restored weights.
            started = time.perf_counter()
            with signals.deferred():
                logs = model.evaluate(val, callbacks=[gate], verbose=0, return_dict=True)
            seconds = time.perf_counter() - started
            train_loss = state.metrics[schema.TRAIN_LOSS]
            return [recorder.record(state.epoch, train_loss, logs["loss"], seconds)]
        ends = [frozen, self.epochs] if initial_epoch < frozen < self.epochs else [self.epochs]
        for begin, end in zip([initial_epoch, *ends[:-1]], ends, strict=True):
            if begin == frozen and begin > initial_epoch:  # the encoder's frozen epochs are over
                unfreeze(model)
                compile_model()  # a fresh optimizer for every trainable variable
            with signals.deferred():  # a signal ends training between batches, never mid-write
                model.fit(
                    train,
                    validation_data=val,
                    epochs=end,
                    initial_epoch=begin,
                    shuffle=False,  # the tf.data stream shuffles itself, seeded
                    callbacks=[
                        gate,
                        NonFiniteGuard(),
                        SignalGuard(),
                        Progress(self.epochs, self.progress_seconds),  # cleared before the
                        recorder,  # epoch line
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
