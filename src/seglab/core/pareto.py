"""The Pareto front of a multi-objective search: the trials no other trial beats on every
objective at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seglab.core.checks import check_choice


def pareto_front(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which rows of ``values`` (trials x objectives) are on the Pareto front.

    A row is dominated when another row is at least as good on every objective and strictly
    better on one (``directions``: ``minimize`` or ``maximize`` per column). Rows with NaN are
    never on the front; equal rows are all on it.

    Returns:
        A boolean mask, one entry per row.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(directions):
        raise ValueError(
            f"values of shape {values.shape} do not match {len(directions)} objectives"
        )
    for direction in directions:
        check_choice("direction", direction, ("minimize", "maximize"))
    sign = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    costs = values * sign  # lower is better on every column
    valid = ~np.isnan(costs).any(axis=1)
    front = valid.copy()
    for i in np.flatnonzero(valid):
        others = costs[valid]
        dominated = (others <= costs[i]).all(axis=1) & (others < costs[i]).any(axis=1)
        front[i] = not dominated.any()
    return np.asarray(front, dtype=bool)
