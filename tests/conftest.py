"""Shared fixtures: quiet TensorFlow, and no test ever writes to the user's MLflow store."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest
from hydra import compose, initialize_config_dir

from seglab.paths import config_dir

CLASSES = ["background", "disk", "square", "bar", "speck"]  # data=shapes
EPOCH_KEYS = [  # every metric logged once per epoch
    "train/loss",
    "val/loss",
    "val/ce",
    "val/miou",
    "val/min_iou",
    "val/pixel_acc",
    *(f"val/{kind}/{name}" for kind in ("iou", "dice", "loss_share") for name in CLASSES),
]


@pytest.fixture(autouse=True)
def _no_external_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def sqlite_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def artifact_paths(client, run_id: str) -> set[str]:
    """Artifact paths of a run, one folder level deep (root files and figures/...)."""
    paths = {a.path for a in client.list_artifacts(run_id)}
    return paths | {a.path for a in client.list_artifacts(run_id, "figures")}


def compose_train(*overrides: str, hydra_config: bool = False):
    """The ``train`` config composed with ``overrides``, as ``python -m seglab.train`` would."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_config)
