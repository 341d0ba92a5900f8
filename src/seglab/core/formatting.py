"""Numbers as a reader sees them in reports and tables."""

from __future__ import annotations

import math


def readable(value: float, shown: str) -> str:
    """``shown`` (``value`` written with fixed decimals), or ``value`` to 3 significant digits
    when those decimals would show a nonzero value as 0: a loss of 3e-5 must not read
    ``0.0000``."""
    return f"{value:.3g}" if value != 0 and not math.isnan(value) and float(shown) == 0 else shown
