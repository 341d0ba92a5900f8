"""Numbers as a reader sees them in reports and tables."""

from __future__ import annotations

import html
import math
import re


def readable(value: float, shown: str) -> str:
    """``shown`` (``value`` written with fixed decimals), or ``value`` to 3 significant digits
    when those decimals would show a nonzero value as 0: a loss of 3e-5 must not read
    ``0.0000``."""
    return f"{value:.3g}" if value != 0 and not math.isnan(value) and float(shown) == 0 else shown


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
