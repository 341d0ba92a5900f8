"""Is a difference real? Intervals over seeds and a paired bootstrap over images.

Two sources of noise, two methods:

- **Seeds.** Runs that differ only in ``trainer.seed`` are draws of one configuration. Per
  configuration: mean, sample standard deviation and a 95 % Student-t interval
  ``mean ± t(0.975, n-1) · sd / sqrt(n)`` (no interval with one seed). Two configurations are
  compared by the same interval on their per-seed differences, paired by seed when both ran the
  same seeds (:func:`paired_difference`).
- **Images.** Two runs scored on the same split are compared class by class with a paired
  bootstrap over images (:func:`paired_bootstrap`): images are resampled with replacement, both
  runs' per-image counts are summed over the same resample, and the 2.5th and 97.5th percentiles
  of the IoU difference form the interval. It says whether the difference holds across the
  images of this split, for these two trained models (not across seeds).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from seglab.core.formatting import readable
from seglab.core.per_image import PerImageCounts
from seglab.core.scores import iou

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its 95 % interval.

    Attributes:
        n: Number of values.
        mean: Their mean.
        sd: Sample standard deviation (NaN for fewer than 2 values).
        low: Lower end of the interval (NaN for fewer than 2 values).
        high: Upper end.
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (False without an interval)."""
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 3) -> str:
        """``0.512 ± 0.034`` (``0.512`` alone with one value)."""
        mean = readable(self.mean, f"{self.mean:.{digits}f}")
        if math.isnan(self.half_width):
            return mean
        return f"{mean} ± {readable(self.half_width, f'{self.half_width:.{digits}f}')}"


def t_interval(values: Sequence[float]) -> Interval:
    """Mean and Student-t 95 % interval of ``values`` (NaNs dropped)."""
    data = [float(v) for v in values if not math.isnan(v)]
    n = len(data)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    # statistics sums exactly: seeds that agree (0.95 three times) have sd 0, not numpy's
    # 1.4e-16, which a report would print as an interval.
    mean = statistics.mean(data)
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    sd = statistics.stdev(data, mean)
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def paired_difference(a: pd.Series | Sequence[float], b: pd.Series | Sequence[float]) -> Interval:
    """Interval of ``b - a``: on per-seed differences when both are indexed by the same seeds
    (a paired comparison), else on the difference of the means with Welch's standard error."""
    a, b = pd.Series(a, dtype=float).dropna(), pd.Series(b, dtype=float).dropna()
    shared = a.index.intersection(b.index)
    if len(shared) == len(a) == len(b) and len(shared) >= 2:
        return t_interval((b[shared] - a[shared]).tolist())
    mean = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return Interval(min(len(a), len(b)), mean, math.nan, math.nan, math.nan)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(min(len(a), len(b)), mean, 0.0, mean, mean)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
    return Interval(min(len(a), len(b)), mean, math.nan, mean - half, mean + half)


def seed_summary(
    runs: pd.DataFrame, metrics: Sequence[str], by: str = "configuration"
) -> pd.DataFrame:
    """Tidy rows per configuration x metric: n, mean, sd, ci_low, ci_high over its runs.

    Args:
        runs: One row per run, with a ``by`` column and the ``metrics`` columns.
        metrics: Columns to summarise.
        by: The column naming each run's configuration.
    """
    rows = []
    for configuration, group in runs.groupby(by, sort=False):
        for metric in metrics:
            interval = t_interval(group[metric].tolist())
            rows.append(
                {
                    by: configuration,
                    "metric": metric,
                    "n": interval.n,
                    "mean": interval.mean,
                    "sd": interval.sd,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                }
            )
    return pd.DataFrame(rows, columns=[by, "metric", "n", "mean", "sd", "ci_low", "ci_high"])


def paired_bootstrap(
    a: PerImageCounts,
    b: PerImageCounts,
    class_names: Sequence[str],
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-class IoU of two runs on the same images and the 95 % bootstrap interval of
    ``iou_b - iou_a``, resampling images (paired: one resample serves both runs).

    Returns:
        One row per class: class, iou_a, iou_b, difference, ci_low, ci_high, images (that
        contain the class).

    Raises:
        ValueError: When the two runs were not scored on the same images.
    """
    if sorted(a.names) != sorted(b.names):
        only = sorted(set(a.names) ^ set(b.names))[:3]
        raise ValueError(
            f"the runs were scored on different images ({len(a.names)} and {len(b.names)}; "
            f"e.g. {only}): a paired comparison needs the same split"
        )
    order = [b.names.index(name) for name in a.names]
    counts_b = [x[order] for x in (b.tp, b.fp, b.fn)]
    counts_a = [a.tp, a.fp, a.fn]
    rng = np.random.default_rng(seed)
    images = len(a.names)
    # Resample i draws image j weights[i, j] times: one matrix product sums a whole resample.
    weights = rng.multinomial(images, np.full(images, 1 / images), size=resamples)
    boot_a = iou(*(weights @ x for x in counts_a))
    boot_b = iou(*(weights @ x for x in counts_b))
    with np.errstate(invalid="ignore"):
        low, high = np.nanpercentile(boot_b - boot_a, [2.5, 97.5], axis=0)
    iou_a = iou(*(x.sum(axis=0) for x in counts_a))
    iou_b = iou(*(x.sum(axis=0) for x in counts_b))
    return pd.DataFrame(
        {
            "class": list(class_names),
            "iou_a": iou_a,
            "iou_b": iou_b,
            "difference": iou_b - iou_a,
            "ci_low": low,
            "ci_high": high,
            "images": a.present.sum(axis=0),
        }
    )
