"""Colour masks: the table that maps each colour to its class, and the census of the colours a
set of masks holds (what a user needs to write that table)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seglab.data.errors import DataFileError

Color = tuple[int, int, int]


def color_codes(rgb: np.ndarray) -> np.ndarray:
    """One int per colour of an ``(..., 3)`` array: ``r * 65536 + g * 256 + b``."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]


def ignore_color_list(ignore_color: Sequence[Any] | None) -> list[list[Any]]:
    """``data.ignore_color`` as a list of colours: one ``[r, g, b]``, several, or none."""
    if ignore_color is None:
        return []
    items: list[Any] = list(ignore_color)
    if items and all(isinstance(c, Sequence) and not isinstance(c, str) for c in items):
        return [list(c) for c in items]
    return [items]


class ColorTable:
    """Maps colour-mask pixels to class indices; a colour not in the table is an error naming the
    file, the first such pixel and its colour.

    Args:
        colors: One ``[r, g, b]`` per class, in class order.
        ignore_color: The colour, or a list of colours, that becomes ``ignore_index`` (void,
            boundary...); ``None``: none.
        ignore_index: The index the ignore colours become.
    """

    def __init__(
        self,
        colors: Sequence[Sequence[int]],
        ignore_color: Sequence[int] | Sequence[Sequence[int]] | None,
        ignore_index: int,
    ) -> None:
        ignored = ignore_color_list(ignore_color)
        table = [*map(list, colors), *ignored]
        for color in table:
            if len(color) != 3 or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
            ):
                raise ValueError(f"data.colors: {color} is not an [r, g, b] of 0..255 values")
        codes = color_codes(np.array(table, np.int64).reshape(-1, 3))
        if len(set(codes.tolist())) != len(codes):
            raise ValueError(f"data.colors: the same colour is given twice in {table}")
        indices = np.array([*range(len(colors)), *[ignore_index] * len(ignored)], np.int32)
        order = np.argsort(codes)
        self.colors = table
        self._codes = codes[order]
        self._indices = indices[order]

    def labels(self, rgb: np.ndarray, path: str) -> np.ndarray:
        """``(H, W, 3)`` colours → ``int32 (H, W)`` class indices."""
        codes = color_codes(rgb)
        position = np.clip(np.searchsorted(self._codes, codes), 0, len(self._codes) - 1)
        known = self._codes[position] == codes
        if not known.all():
            row, col = np.argwhere(~known)[0]
            raise DataFileError(
                f"mask {path} has the colour {rgb[row, col].tolist()} (first at row {row}, "
                f"column {col}) that is not in data.colors {self.colors}; add it as a class "
                "colour or to data.ignore_color"
            )
        return self._indices[position]


def color_census(masks: Iterable[np.ndarray]) -> Counter[Color]:
    """Pixel count of every colour in ``(H, W, 3)`` masks."""
    census: Counter[Color] = Counter()
    for rgb in masks:
        codes, counts = np.unique(color_codes(rgb).ravel(), return_counts=True)
        for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
            census[(code // 65536, code // 256 % 256, code % 256)] += count
    return census


def suggested_classes_yaml(census: Counter[Color], ignore_index: int) -> str:
    """A ``classes.yaml`` with one class per colour, most frequent first, for the user to name
    (and to move void colours to ``ignore_color``)."""
    total = sum(census.values())
    lines = [
        "# Colours found in the masks, most pixels first. Name each class (or move a void",
        "# colour to ignore_color, a list), delete this comment and save as classes.yaml.",
        "classes:",
    ]
    colors = []
    for number, (color, count) in enumerate(census.most_common()):
        lines.append(f"  - class_{number}   # {list(color)}: {count / total:.2%} of the pixels")
        colors.append(f"  - {list(color)}")
    lines += ["colors:", *colors, "ignore_color: []", f"ignore_index: {ignore_index}", ""]
    return "\n".join(lines)


def described_census(census: Counter[Color], shown: int = 8) -> str:
    """``[0, 0, 0] 61.2 %, [128, 64, 128] 20.1 %, ... and 3 more``."""
    total = sum(census.values())
    parts = [f"{list(c)} {n / total:.1%}" for c, n in census.most_common(shown)]
    more = len(census) - shown
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def write_suggestion(root: Path, text: str) -> str:
    """Writes ``classes.suggested.yaml`` in ``root`` (never ``classes.yaml`` itself); returns
    where it is, or why it could not be written."""
    path = root / "classes.suggested.yaml"
    try:
        path.write_text(text)
    except OSError as error:
        return f"(a classes.yaml could not be written to {path}: {error.strerror})"
    return f"a classes.yaml to fill in is written to {path}"
