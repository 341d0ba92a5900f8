"""Every experiment file composes with every swept value, and smoke-trains."""

import math

import pytest
from conftest import compose_train, skip_where_capped_below
from omegaconf import OmegaConf
from test_camvid import make_camvid

from seglab.paths import config_dir
from seglab.tracking.sweep import count_jobs
from seglab.train import run

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def compose_experiment(name, *overrides, hydra=True):
    return compose_train(f"experiment={name}", *overrides, hydra_config=hydra)


def sweep_params(cfg) -> dict[str, str]:
    return {str(k): str(v) for k, v in (cfg.hydra.sweeper.params or {}).items()}


def values(key: str, sweep: str) -> list[str]:
    """The values a sweep gives ``key`` (``a,b``, ``range(3)`` or one value), as Hydra expands
    them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"{key}={sweep}"])
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    return list(override.sweep_string_iterator())


def test_there_is_an_experiment_per_research_question():
    # The experiments without training runs are measure.py scripts (test_experiment_measurements).
    assert set(EXPERIMENTS) >= {
        "demo",
        "hidden_failure",
        "class_weight_schemes",
        "per_batch_weights_pitfall",
        "one_class_everywhere",
        "one_class_everywhere_fix",
        "hidden_failure_original",
        "hidden_failure_original_camvid",
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
    for key, sweep in params.items():
        for value in values(key, sweep):
            OmegaConf.resolve(compose_experiment(name, f"{key}={value}"))


def last_swept_values(name: str) -> list[str]:
    """``key=value`` for the last value of every key the experiment sweeps: a configuration the
    sweep really runs (the composed config alone holds none of the swept values)."""
    params = sweep_params(compose_experiment(name))
    return [f"{key}={values(key, sweep)[-1]}" for key, sweep in params.items()]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke_trains_its_last_swept_configuration(name, tmp_path):
    data = []
    if compose_experiment(name).data._target_.endswith("folder"):
        make_camvid(tmp_path / "data")
        data = [f"data.root={tmp_path / 'data'}"]
    swept = last_swept_values(name)
    cfg = compose_experiment(
        name,
        *swept,
        *data,
        "debug=smoke",
        "trainer.epochs=1",
        f"paths.output_dir={tmp_path}",
        hydra=False,
    )
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(swept):
        if "." in override.key_or_group:  # a config value, e.g. data.rare_max_count=2
            selected = OmegaConf.select(cfg, override.key_or_group)
            if OmegaConf.is_config(selected):  # e.g. trainer.optimizer={_target_: ...}
                selected = OmegaConf.to_container(selected)
            assert selected == override.value()
    if cfg.trainer.precision in ("bfloat16", "float16"):
        skip_where_capped_below(cfg.trainer.precision)
    assert math.isfinite(run(cfg).val_loss)


def test_every_experiment_folder_has_a_readme_in_the_index():
    from seglab.paths import project_root

    root = project_root() / "experiments"
    index = (root / "README.md").read_text()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    for folder in folders:
        assert (root / folder / "README.md").is_file(), folder
        assert f"]({folder}/README.md)" in index, folder
    # Every experiment config has its folder, or is a companion of one (`<folder>_...`).
    for name in EXPERIMENTS:
        assert name in ("demo", "demo_seeds") or any(name.startswith(f) for f in folders), name
