"""Every experiment file composes with every swept value, and smoke-trains."""

import math

import pytest
from conftest import compose_train
from omegaconf import OmegaConf

from seglab.paths import config_dir
from seglab.sweep import count_jobs
from seglab.train import run

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def compose_experiment(name, *overrides, hydra=True):
    return compose_train(f"experiment={name}", *overrides, hydra_config=hydra)


def sweep_params(cfg) -> dict[str, str]:
    return {str(k): str(v) for k, v in (cfg.hydra.sweeper.params or {}).items()}


def test_there_is_an_experiment_per_research_question():
    assert set(EXPERIMENTS) >= {
        "demo",
        "hidden_failure",
        "class_weight_schemes",
        "per_batch_weights_pitfall",
        "loss_zoo",
        "augmentation_strength",
        "imbalance_severity",
    }


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_is_a_multirun_whose_every_value_composes(name):
    cfg = compose_experiment(name)
    params = sweep_params(cfg)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and params
    assert cfg.tracking.experiment_name == name
    assert count_jobs([], params) >= 2
    for key, values in params.items():
        for value in values.split(","):
            OmegaConf.resolve(compose_experiment(name, f"{key}={value}"))


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke_trains(name, tmp_path):
    cfg = compose_experiment(
        name,
        "trainer=smoke",
        "trainer.epochs=1",
        "data.num_train=8",
        "data.num_val=4",
        "data.image_size=32",
        f"paths.output_dir={tmp_path}",
        hydra=False,
    )
    assert math.isfinite(run(cfg).val_loss)
