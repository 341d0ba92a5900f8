"""The losses' formulas as pure functions of tensors.

The classes of :mod:`seglab.losses` add what a Keras loss needs around them (labels and ignored
pixels, class weights, the reduction, the config); the mathematics lives here, one function per
formula, each usable on its own (``keras.ops``, any backend). Shapes: ``one_hot`` and ``probs``
are (B, H, W, C) with ignored pixels already zeroed in both; per-class results are (C,).
"""

from __future__ import annotations

from typing import Any

from keras import ops

EPSILON = 1e-7


def true_class_probability(labels: Any, probs: Any) -> Any:
    """(B, H, W) probability each pixel gives its true class, renormalised over the classes and
    clipped to ``[eps, 1 - eps]`` (as Keras' ``categorical_crossentropy`` does).

    Gathered, not picked by a one-hot product: on a small U-Net a (B, H, W, C) product and its
    gradient cost about 6 % of a training step.
    """
    p_true = ops.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    return ops.clip(p_true / ops.sum(probs, axis=-1), EPSILON, 1.0 - EPSILON)


def cross_entropy(p_true: Any) -> Any:
    """Per-pixel cross-entropy ``-log p_t``."""
    return -ops.log(p_true)


def batch_count_weights(one_hot: Any, epsilon: float = EPSILON) -> Any:
    """(C,) weights ``B / (sum_bhw g_c + eps)`` from one batch's one-hot targets: the per-batch
    inverse counts of the one-class-everywhere question's loss. A class absent from the batch
    gets ``B / eps`` (1.6e8 for a batch of 16)."""
    batch = ops.cast(ops.shape(one_hot)[0], "float32")
    return batch / (ops.sum(one_hot, axis=(0, 1, 2)) + epsilon)


def focal(p_true: Any, gamma: float, alpha: float) -> Any:
    """Per-pixel focal loss ``-alpha (1 - p_t)^gamma log p_t`` (Lin et al. 2017)."""
    return alpha * ops.power(1.0 - p_true, gamma) * -ops.log(p_true)


def overlaps(one_hot: Any, probs: Any) -> tuple[Any, Any, Any]:
    """Soft TP, FP, FN per class, summed over batch and pixels."""
    tp = ops.sum(one_hot * probs, axis=(0, 1, 2))
    fp = ops.sum(probs, axis=(0, 1, 2)) - tp
    fn = ops.sum(one_hot, axis=(0, 1, 2)) - tp
    return tp, fp, fn


def soft_dice(one_hot: Any, probs: Any, smooth: float, squared: bool = False) -> Any:
    """(C,) soft Dice loss per class: ``1 - (2 sum p g + s) / (sum p + sum g + s)``, with
    ``sum p^2`` in the denominator when ``squared`` (Milletari et al. 2016)."""
    tp = ops.sum(one_hot * probs, axis=(0, 1, 2))
    power = 2 if squared else 1
    denominator = ops.sum(probs**power, axis=(0, 1, 2)) + ops.sum(one_hot, axis=(0, 1, 2))
    return 1.0 - (2.0 * tp + smooth) / (denominator + smooth + 1e-12)


def generalized_dice(one_hot: Any, probs: Any, included: Any, relative: Any, smooth: float) -> Any:
    """(C,) per-class terms of the generalized Dice loss (Sudre et al. 2017); they sum to it.

    ``w_c = 1 / (sum g_c)^2`` over the ``included`` classes (1.0 or 0.0 each); a class absent
    from the truth gets the largest included finite weight, and every weight is 0 when none of
    them is present (as MONAI's ``GeneralizedDiceLoss``). ``relative`` (C,) multiplies ``w_c``
    after being scaled to mean 1 over the included classes. Term c:
    ``w_c (sum (p+g) - 2 sum p g) / (sum_k w_k sum (p+g) + s)``.
    """
    volume = ops.sum(one_hot, axis=(0, 1, 2))
    present = volume > 0
    inverse = ops.where(present, 1.0 / ops.square(ops.where(present, volume, 1.0)), 0.0)
    inverse = inverse * included
    largest = ops.max(inverse)  # over the included classes; 0 when none is present
    volume_weights = ops.where(present, inverse, largest) * included
    relative = relative * ops.sum(included) / ops.sum(relative)  # mean 1 where included
    weights = volume_weights * relative
    intersection = ops.sum(one_hot * probs, axis=(0, 1, 2))
    union = ops.sum(one_hot + probs, axis=(0, 1, 2))
    return weights * (union - 2.0 * intersection) / (ops.sum(weights * union) + smooth)


def tversky_index(one_hot: Any, probs: Any, alpha: float, beta: float, smooth: float) -> Any:
    """(C,) Tversky index ``(TP + s) / (TP + alpha FP + beta FN + s)`` (Salehi et al. 2017)."""
    tp, fp, fn = overlaps(one_hot, probs)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth + 1e-12)


def focal_tversky(index: Any, gamma: float) -> Any:
    """(C,) focal Tversky loss ``(1 - TI)^gamma`` (Abraham & Khan 2019), ``1 - TI`` floored at
    1e-7 so the gradient stays finite at a perfect prediction."""
    return ops.power(ops.maximum(1.0 - index, 1e-7), gamma)


def lovasz_grad(sorted_truth: Any) -> Any:
    """Gradient of the Lovász extension of the Jaccard loss at sorted errors (per column).

    ``sorted_truth`` is (N, C): each column the class's 0/1 truth ordered by decreasing error.
    Entry i is ``J(i) - J(i - 1)`` with ``J(i)`` the Jaccard loss of predicting the first i+1
    pixels wrong (Berman et al. 2018, Algorithm 1).
    """
    total = ops.sum(sorted_truth, axis=0, keepdims=True)
    intersection = total - ops.cumsum(sorted_truth, axis=0)
    union = total + ops.cumsum(1.0 - sorted_truth, axis=0)
    jaccard = 1.0 - intersection / union
    return ops.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)


def lovasz_softmax(one_hot: Any, probs: Any) -> Any:
    """(C,) Lovász-softmax loss of each class over all pixels: errors ``|g - p|`` sorted in
    decreasing order, dotted with :func:`lovasz_grad` of the truth in that order (Berman et al.
    2018). Zeroed (ignored) pixels have error 0: they sort last and change no term."""
    num_classes = probs.shape[-1]
    truth = ops.reshape(one_hot, (-1, num_classes))
    errors = ops.abs(truth - ops.reshape(probs, (-1, num_classes)))
    order = ops.argsort(-errors, axis=0)
    sorted_errors = ops.take_along_axis(errors, order, axis=0)
    sorted_truth = ops.take_along_axis(truth, order, axis=0)
    return ops.sum(sorted_errors * ops.stop_gradient(lovasz_grad(sorted_truth)), axis=0)


def bce_minus_dice(one_hot: Any, probs: Any, valid: Any, smooth: float) -> Any:
    """(B, H, W) per-pixel ``BCE - (1 + Dice)``: BCE meaned over the class axis (as Keras'
    ``binary_crossentropy``), Dice pooled over every pixel and class of the batch."""
    p = ops.clip(probs, EPSILON, 1.0 - EPSILON)
    bce = -ops.mean(one_hot * ops.log(p) + (1.0 - one_hot) * ops.log(1.0 - p), axis=-1)
    masked = probs * valid[..., None]
    dice = (2.0 * ops.sum(one_hot * masked) + smooth) / (
        ops.sum(one_hot) + ops.sum(masked) + smooth
    )
    return bce - 1.0 - dice
