"""``seglab stats [data=... overrides]``: per-class pixel share and image counts.

The first thing to look at before choosing a class-weight scheme: how rare each class is, in
pixels and in images, on every split. Composes the same config as ``seglab.train``
(``conf/stats.yaml`` adds its help, and counts once where an experiment would sweep).
"""

from __future__ import annotations

import sys

import hydra
import pandas as pd
from omegaconf import DictConfig

from seglab.cli import bad_input_in_one_line
from seglab.config import build, check_overrides, check_required
from seglab.core.formatting import percent
from seglab.data.counting import split_counts
from seglab.paths import config_dir


def table(cfg: DictConfig) -> pd.DataFrame:
    """One row per class: pixel share and images containing it, on every split."""
    check_required(cfg)
    data = build(cfg.data)
    columns: dict[str, object] = {"class": list(data.class_names)}
    for split in data.splits:
        counts = split_counts(data, split)
        columns[f"{split}_pixel_share"] = counts.pixel_share
        columns[f"{split}_images_with_class"] = counts.images
        columns[f"{split}_images"] = counts.num_images
    return pd.DataFrame(columns)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="stats")
def main(cfg: DictConfig) -> None:
    with bad_input_in_one_line("seglab stats"):
        frame = table(cfg)
    shown = frame.copy()
    for column in [c for c in frame.columns if c.endswith("_pixel_share")]:
        shown[column] = frame[column].map(percent)
    print(shown.to_string(index=False))


def cli() -> None:
    """``seglab stats``: unknown group options named in one line before Hydra composes."""
    with bad_input_in_one_line("seglab stats"):
        check_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
