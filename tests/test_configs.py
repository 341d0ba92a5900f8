"""Every option of every config group composes, and its target imports."""

import re
from pathlib import Path

import pytest
from conftest import compose_train
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from seglab.config import check_overrides
from seglab.losses import build_loss
from seglab.paths import config_dir
from seglab.search.space import overrides
from seglab.search.sweeper import SearchSweep

# experiment, debug and search files are @package _global_: tests/test_experiments.py, the debug
# and the search tests below cover them
GROUPS = sorted(
    p.name
    for p in config_dir().iterdir()
    if p.is_dir() and p.name not in ("hydra", "experiment", "debug", "search")
)
SEARCHES = [p.stem for p in sorted((config_dir() / "search").glob("*.yaml"))]


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_composes_with_a_valid_space_and_objectives(search):
    cfg = compose_train(f"search={search}", hydra_config=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    assert (
        sweeper.pop("_target_")
        == "hydra_plugins.seglab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    )
    assert callable(get_object(cfg.hydra.sweeper._target_))
    built = SearchSweep(**sweeper)  # space, objectives, sampler and pruner checked
    assert built.space.keys and built.objectives
    for probe in built.space.probes():  # every key composes where it applies
        compose_train(f"search={search}", *overrides(probe))


OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((config_dir() / g).glob("*.yaml"))]


def test_the_groups_mirror_the_modules():
    assert {"data", "model", "loss", "class_weights", "trainer", "tracking"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_its_target_imports(group, option):
    cfg = compose_train(f"{group}={option}")
    node = cfg[group]
    OmegaConf.resolve(cfg)
    if "_target_" in node:
        assert callable(get_object(node._target_))


def test_outputs_and_the_mlflow_store_live_under_the_project_root():
    cfg = compose_train(hydra_config=True)
    root = Path(cfg.paths.root_dir)
    assert (root / "pyproject.toml").is_file()
    assert cfg.tracking.default_uri == f"sqlite:///{root}/outputs/mlflow.db"
    assert str(cfg.hydra.run.dir).startswith(f"{root}/outputs/runs/")
    assert str(cfg.hydra.sweep.dir).startswith(f"{root}/outputs/sweeps/")


DATA_OPTIONS = [p.stem for p in sorted((config_dir() / "data").glob("*.yaml"))]


@pytest.mark.parametrize("data", DATA_OPTIONS)
def test_debug_smoke_composes_with_every_data_option(data):
    cfg = compose_train("debug=smoke", f"data={data}")
    assert (cfg.data.image_size, cfg.data.limit) == (32, 16)
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.model.depth) == (2, 4, 2)
    assert cfg.data._target_ == compose_train(f"data={data}").data._target_


def test_camvid_inherits_folder_with_the_segnet_layout():
    folder, camvid = compose_train("data=folder").data, compose_train("data=camvid").data
    assert camvid._target_ == folder._target_
    assert set(folder) == set(camvid)  # every folder option, none repeated by hand
    assert list(camvid.class_names) == [
        "sky",
        "building",
        "pole",
        "road",
        "pavement",
        "tree",
        "sign_symbol",
        "fence",
        "car",
        "pedestrian",
        "bicyclist",
    ]
    assert camvid.ignore_index == 11
    assert OmegaConf.to_container(camvid.splits) == {
        split: {"images": split, "masks": f"{split}annot"} for split in ("train", "val", "test")
    }


def test_smoke_preset_shrinks_data_and_model_and_everything_instantiates(tmp_path):
    cfg = compose_train("debug=smoke", f"paths.output_dir={tmp_path}")
    assert cfg.trainer.epochs == 2 and cfg.data.image_size == 32 and cfg.model.depth == 2
    data = instantiate(cfg.data)
    assert (data.num_train, data.num_val) == (16, 16)
    model = instantiate(cfg.model, input_shape=data.image_shape, num_classes=data.num_classes)
    loss = build_loss(instantiate(cfg.loss), None, data.ignore_index)
    trainer = instantiate(cfg.trainer)
    tracker = instantiate(cfg.tracking)
    assert model.output_shape == (None, 32, 32, 5)
    assert loss.ignore_index == 255
    assert trainer.optimizer().learning_rate.numpy() == pytest.approx(3e-3)
    assert tracker.uri == f"sqlite:///{tmp_path}/mlflow.db"


OPTIMIZERS = sorted(p.stem for p in (config_dir() / "trainer" / "optimizer").glob("*.yaml"))


@pytest.mark.parametrize("option", OPTIMIZERS)
def test_every_optimizer_option_builds_a_fresh_keras_optimizer(option):
    import keras

    trainer = instantiate(compose_train(f"trainer/optimizer={option}").trainer)
    first, second = trainer.optimizer(), trainer.optimizer()
    assert isinstance(first, keras.optimizers.Optimizer) and first is not second
    assert type(first).__name__.lower() == option
    expected = {"adam": 3e-3, "sgd": 1e-2}[option]
    assert first.learning_rate.numpy() == pytest.approx(expected)


def test_predict_config_needs_run_input_and_output_and_writes_nothing_else(tmp_path):
    from hydra import compose, initialize_config_dir

    overrides = ["run_id=abc", "input=in", f"output={tmp_path}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("predict", overrides=overrides, return_hydra_config=True)
        missing = compose("predict", return_hydra_config=True)
    assert cfg.hydra.run.dir == "." and cfg.hydra.output_subdir is None
    assert "file" not in cfg.hydra.job_logging.handlers  # no predict.log among the masks
    assert cfg.tracking.default_uri.endswith("/outputs/mlflow.db")
    assert all(missing._get_node(key)._is_missing() for key in ("run_id", "input", "output"))


def test_stats_counts_the_training_data_once_and_makes_no_mlflow_run():
    from hydra import compose, initialize_config_dir

    overrides = ["experiment=demo", "debug=smoke"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        stats = compose("stats", overrides=overrides, return_hydra_config=True)
    train = compose_train(*overrides, hydra_config=True)
    assert stats.data == train.data  # what training would count
    assert (train.hydra.mode.name, stats.hydra.mode.name) == ("MULTIRUN", "RUN")
    assert "mlflow_sweep" in OmegaConf.to_yaml(train.hydra.callbacks)
    assert not stats.hydra.callbacks


HELP_CASES = [
    ("train", []),
    ("stats", []),
    ("predict", ["run_id=a", "input=b", "output=c"]),
]


@pytest.mark.parametrize(("command", "overrides"), HELP_CASES)
def test_each_command_help_is_its_usage_and_groups_without_the_whole_config(command, overrides):
    from hydra import compose, initialize_config_dir

    # --help prints hydra.help.template, with the config groups and the config filled in.
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(command, overrides=overrides, return_hydra_config=True)
    template = cfg.hydra.help.template
    assert template.startswith(f"seglab {command} ")
    assert "$APP_CONFIG_GROUPS" in template and "$CONFIG" not in template
    assert "--cfg job" in template


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ("train", ["data=camvid"], "data.root not set: add data.root=<value> to the command"),
        ("stats", ["data=folder"], "data.root not set: add data.root=<value> to the command"),
        (
            "predict",
            ["input=in"],
            "output, run_id not set: add output=<value> run_id=<value> to the command",
        ),
    ],
)
def test_an_unset_option_is_named_before_anything_starts(config, overrides, message):
    from hydra import compose, initialize_config_dir

    from seglab.config import check_required
    from seglab.train import run

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config, overrides=overrides)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_required(cfg)
    if config == "train":  # run checks it first: nothing is built, no MLflow run starts
        with pytest.raises(ValueError, match=re.escape(message)):
            run(cfg)
    check_required(compose_train())  # the defaults need nothing more


def test_option_files_inherit_instead_of_repeating():
    """augment and class_weights options start from their group's ``none`` (the default) and set
    only what differs; no option file repeats a value of the file it starts from."""
    for group in ("augment", "class_weights"):
        for path in sorted((config_dir() / group).glob("*.yaml")):
            if path.stem != "none":
                assert OmegaConf.load(path).defaults[0] == "none", path
    for path in sorted(config_dir().glob("*/*.yaml")):
        own = OmegaConf.load(path)
        parents = [d for d in own.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        for parent in parents:
            inherited = OmegaConf.load(path.parent / f"{parent}.yaml")
            repeated = [k for k in own if k in inherited and inherited[k] == own[k]]
            assert repeated == [], f"{path.name} repeats {repeated} of {parent}.yaml"
    assert set(compose_train("augment=strong").augment) == set(compose_train().augment)


@pytest.mark.parametrize(
    ("node", "key", "path", "found"),
    [
        ({}, "k", "", []),
        ({"k": 1}, "k", "", ["k"]),
        ({"a": {"k": 1}, "k": 2}, "k", "", ["k", "a.k"]),
        ({"a": [{"b": 1}, {"k": {"k": 3}}]}, "k", "data", ["data.a.1.k", "data.a.1.k.k"]),
        ([{"k": 1}], "k", "x", ["x.0.k"]),
        ("k", "k", "", []),
    ],
)
def test_key_paths_finds_every_key_its_level_first(node, key, path, found):
    from seglab.config import key_paths

    assert key_paths(node, key, path) == found


LOSS_CHOICES = "['batch_count_weighted_ce', 'batch_count_weighted_ce_by_prediction', " + (
    "'bce_minus_dice', 'ce', 'ce_dice', 'dice', 'focal', 'focal_tversky', 'generalized_dice', "
    "'lovasz', 'tversky']"
)

# (command-line arguments, the one-line error, or None when Hydra may compose them)
GROUP_OVERRIDE_CASES = {
    "known_option": (["loss=dice", "class_weights=enet"], None),
    "unknown_option": (["loss=dicee"], f"loss='dicee' is not one of {LOSS_CHOICES}"),
    "one_unknown_in_a_sweep": (["-m", "loss=ce,dicee"], "loss='dicee' is not one of"),
    "one_unknown_in_a_choice": (["loss=choice(ce,dicee)"], "loss='dicee' is not one of"),
    "nested_group": (["trainer/optimizer=sgdd"], "trainer/optimizer='sgdd' is not one of"),
    "experiment": (["experiment=dmeo"], "experiment='dmeo' is not one of ['augmentation_str"),
    "values_are_not_groups": (["data.root=/x", "trainer.seed=range(3)", "+loss.after=5"], None),
    "deleting_a_group": (["~augment"], None),
    "hydra_groups_are_hydras": (["hydra/launcher=joblib", "hydra.verbose=true"], None),
    "globs_filter_the_options": (["loss=glob(*dice*)"], None),
    "unparsable_is_left_to_hydra": (["loss=[ce"], None),
}


@pytest.mark.parametrize("case", sorted(GROUP_OVERRIDE_CASES))
def test_an_unknown_group_option_is_named_with_the_groups_options(case):
    args, message = GROUP_OVERRIDE_CASES[case]
    if message is None:
        check_overrides(args)
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_overrides(args)


def test_pre_commit_hooks_run_the_locked_versions():
    """The hooks and ``make lint`` run the same ruff (and nbstripout) the lock installs."""
    import yaml

    root = config_dir().parent
    locked = dict(
        line.split("==", 1)
        for line in (root / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith(" ")
    )
    hooks = yaml.safe_load((root / ".pre-commit-config.yaml").read_text())["repos"]
    revisions = {repo["repo"].rsplit("/", 1)[-1]: repo["rev"].lstrip("v") for repo in hooks}
    assert revisions == {
        "ruff-pre-commit": locked["ruff"].strip(),
        "nbstripout": locked["nbstripout"].strip(),
    }
