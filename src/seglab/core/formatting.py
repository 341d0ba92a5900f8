"""Numbers as a reader sees them in reports and tables."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable


def readable(value: float, shown: str) -> str:
    """``shown`` (``value`` written with fixed decimals), or ``value`` to 3 significant digits
    when those decimals would show a nonzero value as 0: a loss of 3e-5 must not read
    ``0.0000``."""
    return f"{value:.3g}" if value != 0 and not math.isnan(value) and float(shown) == 0 else shown


def percent(fraction: float) -> str:
    """A fraction as a percentage with two decimals (``99.85%``), or three significant digits
    when those would show a nonzero share as 0 (``0.0074%``): how every accuracy and pixel
    share is printed."""
    value = 100 * fraction
    return readable(value, f"{value:.2f}") + "%"


def column_decimals(values: Iterable[float], decimals: int, most: int = 8) -> int:
    """The decimals that show a table column's values alike: ``decimals``, or, when they would
    show the smallest nonzero magnitude as 0, enough for two significant digits of it (at most
    ``most``): a 3-decimal column of ``0.000284``, ``0.050`` reads ``0.00028``, ``0.05000``."""
    magnitudes = [abs(v) for v in values if v == v and v != 0 and not math.isinf(v)]
    if not magnitudes:
        return decimals
    first = -math.floor(math.log10(min(magnitudes)))  # the decimal of its first digit
    return decimals if first <= decimals else min(most, first + 1)


# What Markdown (and the HTML it may hold) would read as markup: links and images ([...]),
# emphasis (*), code (`), table cells (|), escapes (\) and tags or entities (<, >, &).
MARKDOWN_MARKUP = re.compile(r"([\\`*\[\]|])")
MARKDOWN_ESCAPED = re.compile(r"\\([\\`*\[\]|])")


def markdown_text(text: object) -> str:
    """Text from a store (a run, class or option name) as literal Markdown: whoever can name a
    run in a shared store must not control a report's markup."""
    return MARKDOWN_MARKUP.sub(r"\\\1", html.escape(str(text), quote=False))


def plain_text(markdown: str) -> str:
    """What :func:`markdown_text` escaped, unescaped: for renderings that are not Markdown (the
    terminal, HTML that escapes on its own)."""
    return html.unescape(MARKDOWN_ESCAPED.sub(r"\1", markdown))
