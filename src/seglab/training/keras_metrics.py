"""seglab's Keras metrics: a streamed confusion matrix and each class's share of a loss, counted
during validation passes only (the scores themselves are :mod:`seglab.core.scores`)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from seglab.core.scores import iou, label_validity


class ValidationOnly:
    """Mixin: batches count only while ``validating`` is true, checked when Keras traces a step.

    Keras updates compile metrics in training steps too; seglab reads them after validation
    only. Its trainer clears ``validating`` before ``fit`` and ``seglab.callbacks.ValidationGate``
    sets it around each validation pass, so the training step is traced with no metric ops at
    all and the test step with them. (A gate variable read inside the graph still cost up to 3 %
    of a small U-Net's training step.) Outside that trainer ``validating`` stays true and every
    batch counts. Subclasses compute the increments of their ``accumulators`` in
    :meth:`deltas`.
    """

    validating: bool = True
    accumulators: tuple[Any, ...] = ()

    def deltas(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tuple[Any, ...]:
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        if not self.validating:
            return
        deltas = self.deltas(y_true, y_pred, sample_weight)
        for variable, delta in zip(self.accumulators, deltas, strict=True):
            variable.assign_add(delta)


@keras.saving.register_keras_serializable(package="seglab")
class ConfusionMatrix(ValidationOnly, keras.metrics.Metric):
    """Streams a (C, C) confusion matrix (rows: truth, columns: argmax prediction).

    Memory is O(C^2), independent of the dataset. Pixels labelled ``ignore_index`` are skipped;
    ``sample_weight`` is ignored on purpose: the matrix counts pixels, so class weights applied
    to the loss never distort the scores. Its ``result()`` is the mIoU (NaN-aware); read the
    whole matrix with :meth:`matrix`.

    A true label outside ``[0, C)`` that is not ``ignore_index`` has no row: such pixels are
    counted in :attr:`out_of_range` and :meth:`matrix` raises rather than return scores that
    silently leave them out.

    Args:
        num_classes: Number of classes C.
        ignore_index: Mask label to skip (``None``: none).
        name: Metric name (the key in Keras logs).
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = None, name: str = "miou", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", dtype="int64", name="counts"
        )
        self.invalid = self.add_variable(
            shape=(), initializer="zeros", dtype="int64", name="out_of_range"
        )
        self.accumulators = (self.counts, self.invalid)

    def deltas(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tuple[Any, ...]:
        del sample_weight  # pixels are counted, not weighted
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, axis=-1)
        truth = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        pred = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        c = self.num_classes
        valid, bad = label_validity(truth, c, self.ignore_index)
        # Invalid pixels go to bin c*c, which the slice below drops. A segment sum with a fixed
        # number of bins, not bincount, whose output size XLA (jit_compile) cannot know.
        flat = ops.where(valid, truth * c + pred, c * c)
        counts = ops.segment_sum(ops.ones_like(flat), flat, num_segments=c * c + 1)[: c * c]
        out_of_range = ops.sum(ops.cast(bad, "int64"))
        return ops.reshape(ops.cast(counts, "int64"), (c, c)), out_of_range

    @property
    def out_of_range(self) -> int:
        """Pixels whose true label was neither a class index nor ``ignore_index``."""
        return int(ops.convert_to_numpy(self.invalid))

    def result(self) -> Any:
        cm = ops.cast(self.counts, "float64")
        tp = ops.diagonal(cm)
        per_class = iou(tp, ops.sum(cm, axis=0) - tp, ops.sum(cm, axis=1) - tp, ops.where)
        defined = ~ops.isnan(per_class)
        total = ops.sum(ops.where(defined, per_class, 0.0))
        return ops.cast(ops.divide_no_nan(total, ops.sum(ops.cast(defined, "float64"))), "float32")

    def matrix(self) -> np.ndarray:
        """The accumulated confusion matrix as int64 numpy (rows truth, columns prediction).

        Raises:
            ValueError: When some true labels were outside ``[0, C)`` and not ``ignore_index``.
        """
        if bad := self.out_of_range:
            raise ValueError(
                f"ConfusionMatrix: {bad} pixels have a true label outside 0..{self.num_classes - 1}"
                f" that is not ignore_index={self.ignore_index}; they have no row in the matrix. "
                "Check num_classes and ignore_index against the masks"
            )
        return np.asarray(ops.convert_to_numpy(self.counts), dtype=np.int64)

    def reset_state(self) -> None:
        self.counts.assign(ops.zeros_like(self.counts))
        self.invalid.assign(0)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }


@keras.saving.register_keras_serializable(package="seglab")
class PerClassLoss(ValidationOnly, keras.metrics.Metric):
    """Streams a loss's per-class terms over a split: how much of the loss each class carries.

    Accumulates ``loss.per_class(y_true, y_pred, sample_weight) * batch_size`` per batch, the
    same batch-size weighting Keras uses for ``val_loss``, so the terms of the whole split sum
    to the reported loss. ``result()`` is that loss; :meth:`shares` gives each class's fraction.

    Args:
        loss: A ``seglab.losses.SegmentationLoss`` (anything with ``per_class``).
        num_classes: Number of classes C.
        use_sample_weight: Pass the pixel weights on (``False``: the unweighted loss, e.g. an
            unweighted CE that is comparable across runs with different class weights).
        name: Metric name (the key in Keras logs).
    """

    def __init__(
        self,
        loss: Any,
        num_classes: int,
        use_sample_weight: bool = True,
        name: str = "loss_terms",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.loss = loss
        self.num_classes = num_classes
        self.use_sample_weight = use_sample_weight
        self.totals = self.add_variable(
            shape=(num_classes,), initializer="zeros", dtype="float64", name="totals"
        )
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")
        self.accumulators = (self.totals, self.count)

    def deltas(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tuple[Any, ...]:
        terms = self.loss.per_class(
            y_true, y_pred, sample_weight if self.use_sample_weight else None
        )
        batch = ops.cast(ops.shape(y_pred)[0], "float64")
        return ops.cast(terms, "float64") * batch, batch

    def result(self) -> Any:
        return ops.cast(ops.divide_no_nan(ops.sum(self.totals), self.count), "float32")

    def terms(self) -> np.ndarray:
        """Per-class terms of the split (they sum to the loss)."""
        count = float(ops.convert_to_numpy(self.count))
        return np.asarray(ops.convert_to_numpy(self.totals)) / max(count, 1.0)

    def shares(self) -> np.ndarray:
        """Each class's fraction of the loss (terms / their sum; NaN when the sum is 0)."""
        terms = self.terms()
        total = terms.sum()
        return terms / total if total else np.full_like(terms, np.nan)

    def reset_state(self) -> None:
        self.totals.assign(ops.zeros_like(self.totals))
        self.count.assign(ops.zeros_like(self.count))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "num_classes": self.num_classes,
            "use_sample_weight": self.use_sample_weight,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PerClassLoss:
        loss = keras.saving.deserialize_keras_object(config.pop("loss"))
        return cls(loss, **config)
