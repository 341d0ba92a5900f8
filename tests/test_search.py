"""hydra/sweeper=optuna: the search space, objectives, Pareto front, study storage, pruning, and a
real search on debug=smoke that is killed and resumed."""

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import compose_train, empty_postgres
from mlflow.tracking import MlflowClient

from seglab import schema
from seglab.analysis.report import Report, Table
from seglab.analysis.runs import child_runs
from seglab.analysis.search import add_search, front_groups, trials_frame, with_front
from seglab.core.pareto import pareto_front
from seglab.report import main as report_main
from seglab.search import options
from seglab.search.space import SearchSpace, override_value, overrides
from seglab.search.sweeper import SearchSweep, fixed_overrides
from seglab.search.trial import TrialReporter, check_classes
from seglab.tracking.study import load_study, open_storage, retry, storage_url
from seglab.tracking.tracker import MlflowTracker

SPACE = {
    "loss": {"choices": ["ce", "focal", "dice"]},
    "loss.gamma": {"float": [0.5, 5.0], "when": {"loss": "focal"}},
    "class_weights.power": {"float": [0.0, 1.0]},
    "trainer.optimizer.learning_rate": {"float": [1e-4, 1e-2], "log": True},
    "model.base_filters": {"int": [8, 32], "step": 8},
}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "hydra.sweeper.space is empty"),
        ({"loss": ["ce"]}, r"hydra.sweeper.space.loss=\['ce'\] must be a mapping"),
        ({"loss": {"choice": ["ce"]}}, r"unknown option\(s\) \['choice'\]; the options are"),
        ({"a": {"int": [1, 2], "float": [1.0, 2.0]}}, r"exactly one of .*got \['int', 'float'\]"),
        ({"a": {"float": [2.0, 1.0]}}, r"hydra.sweeper.space.a.float=\[2.0, 1.0\]: low is above"),
        ({"a": {"int": [1.5, 3]}}, r"a.int=\[1.5, 3\] must be \[low, high\], two int numbers"),
        ({"a": {"float": [0.0, 1.0], "log": True}}, "log: true needs low > 0, got 0.0"),
        ({"a": {"float": [0.1, 1.0], "log": True, "step": 0.1}}, "step and log: true cannot"),
        ({"a": {"choices": []}}, r"a.choices=\[\] must be a non-empty list"),
        ({"a": {"choices": "ce"}}, "a.choices='ce' must be a non-empty list"),
        (
            {"loss.gamma": {"float": [0.5, 5.0], "when": {"loss": "focal"}}},
            "'loss' is not a categorical parameter written before it",
        ),
        (
            {"loss": {"choices": ["ce"]}, "g": {"float": [0.5, 5.0], "when": {"loss": "focal"}}},
            r"g.when: loss='focal' is not one of \['ce'\]",
        ),
    ],
)
def test_a_bad_space_is_refused_in_one_line_naming_the_entry(space, message):
    with pytest.raises(ValueError, match=message) as error:
        SearchSpace(space)
    assert "\n" not in str(error.value)


def test_a_conditional_parameter_is_sampled_only_when_its_condition_holds():
    space = SearchSpace(SPACE)
    fixed = {"loss": "focal", "loss.gamma": 2.5, "class_weights.power": 0.5}
    fixed |= {"trainer.optimizer.learning_rate": 1e-3, "model.base_filters": 16}
    assert space.sample(optuna.trial.FixedTrial(fixed)) == fixed
    without = {k: v for k, v in fixed.items() if k != "loss.gamma"} | {"loss": "ce"}
    assert space.sample(optuna.trial.FixedTrial(without)) == without  # no gamma asked


def test_sampled_values_stay_in_their_ranges_and_kinds():
    space = SearchSpace(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        values = space.sample(study.ask())
        assert values["loss"] in ("ce", "focal", "dice")
        assert ("loss.gamma" in values) == (values["loss"] == "focal")
        assert 0.0 <= values["class_weights.power"] <= 1.0
        assert 1e-4 <= values["trainer.optimizer.learning_rate"] <= 1e-2
        assert values["model.base_filters"] in (8, 16, 24, 32)


def test_probes_compose_each_parameter_with_its_condition():
    assert SearchSpace(SPACE).probes()[:2] == [
        {"loss": "ce"},
        {"loss": "focal", "loss.gamma": 0.5},
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "null"), (True, "true"), (3, "3"), (0.0001, "0.0001"), (2.5e-05, "2.5e-05"),
     (0.1 + 0.2, "0.30000000000000004"), ("median_frequency", "median_frequency")],
)  # fmt: skip
def test_override_values_round_trip(value, text):
    assert override_value(value) == text
    assert overrides({"k": value}) == [f"k={text}"]


@pytest.mark.parametrize(
    ("key", "logged"),
    [
        ("val/min_iou", True),
        ("val/ce", True),
        ("train/loss", True),
        ("val/iou/pole", True),
        ("test/miou", True),
        ("test/boundary_iou/pole", True),
        ("test/hidden_count", False),  # logged per epoch on val only
        ("val/accuracy", False),
        ("val/iou/", False),
        ("min_iou", False),
        ("val/iou/a/b", False),
    ],
)
def test_objectives_name_metrics_runs_log(key, logged):
    assert schema.is_metric_key(key) is logged


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "hydra.sweeper.objectives is empty"),
        ({"val/accuracy": "maximize"}, "'val/accuracy' is not a metric seglab logs; the metrics"),
        ({"val/ce": "minimise"}, r"val/ce='minimise' is not one of \['minimize', 'maximize'\]"),
    ],
)
def test_bad_objectives_are_refused(given, message):
    with pytest.raises(ValueError, match=message):
        options.objectives(given)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"val/ce": "minimize", "val/min_iou": "maximize"}, "prunes single-objective studies"),
        ({"test/miou": "maximize"}, "'test/miou' is logged once, at the end of a run"),
        ({"val/missed/pole": "minimize"}, "logged once, at the end of a run"),
        ({"val/boundary_iou/pole": "maximize"}, "logged once, at the end of a run"),
        ({"val/hd95/pole": "minimize"}, "logged once, at the end of a run"),
    ],
)
def test_a_pruner_needs_one_objective_logged_every_epoch(given, message):
    with pytest.raises(ValueError, match=message):
        options.check_pruned_objective(given)
    for every_epoch in ("val/min_iou", "val/iou/pole", "val/loss_share/pole", "train/loss"):
        options.check_pruned_objective({every_epoch: "maximize"})


def test_a_per_class_objective_must_name_a_class_of_the_data():
    check_classes({"val/iou/pole": "maximize"}, ["road", "pole"])
    with pytest.raises(ValueError, match=r"'val/iou/poles' names no class.*\['road', 'pole'\]"):
        check_classes({"val/iou/poles": "maximize"}, ["road", "pole"])


@pytest.mark.parametrize(
    ("name", "message"),
    [("grid", "sampler.name='grid' is not one of"), ("cmaes", "is not one of")],
)
def test_unknown_samplers_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        options.sampler({"name": name}, False)


# (values, directions, front): literal fronts by hand.
FRONTS = [
    ([[1, 1], [2, 2], [0, 3]], ["minimize", "minimize"], [True, False, True]),
    ([[1, 1], [2, 2], [0, 3]], ["maximize", "maximize"], [False, True, True]),
    ([[1, 0.2], [2, 0.5], [3, 0.4]], ["minimize", "maximize"], [True, True, False]),
    ([[1, 1], [1, 1]], ["minimize", "minimize"], [True, True]),  # equal: neither dominates
    ([[1, np.nan], [2, 2]], ["minimize", "minimize"], [False, True]),
    ([[3], [1], [2]], ["minimize"], [False, True, False]),
]


@pytest.mark.parametrize(("values", "directions", "front"), FRONTS)
def test_pareto_front_equals_the_hand_computed_one(values, directions, front):
    assert pareto_front(np.array(values, dtype=float), directions).tolist() == front


@pytest.mark.parametrize("directions", [["minimize", "maximize"], ["maximize", "maximize"]])
def test_pareto_front_equals_optunas_best_trials(directions):
    rng = np.random.default_rng(7)
    values = rng.integers(0, 6, size=(40, 2)).astype(float)  # ties on purpose
    study = optuna.create_study(directions=directions)
    for row in values:
        study.add_trial(optuna.create_trial(values=row.tolist(), params={}, distributions={}))
    expected = sorted(t.number for t in study.best_trials)
    assert np.flatnonzero(pareto_front(values, directions)).tolist() == expected


@pytest.mark.parametrize(
    ("tracking", "storage"),
    [
        ("sqlite:////data/x/mlflow.db", "sqlite:////data/x/search.db"),
        ("postgresql+psycopg://u:p@db:5432/mlflow", "postgresql+psycopg://u:p@db:5432/mlflow"),
        ("http://mlflow.lab:5000", "sqlite:////out/search.db"),
    ],
)
def test_the_study_lives_beside_the_mlflow_store(tracking, storage):
    assert storage_url(tracking, "/out") == storage


def test_the_pruner_stops_a_trial_whose_objective_lags_the_median(tmp_path):
    storage = f"sqlite:///{tmp_path}/search.db"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)
    first = study.ask()
    first.report(0.5, step=1)
    study.tell(first, 0.5)
    second = study.ask()
    reporter = TrialReporter(optuna.Trial(study, second._trial_id), "val/min_iou", True)
    assert not reporter.should_stop(1, {"val/miou": 0.9})  # not the objective: nothing reported
    assert reporter.should_stop(1, {"val/min_iou": 0.1})
    assert study.trials[1].intermediate_values == {1: 0.1}
    watching = TrialReporter(optuna.Trial(study, second._trial_id), "val/min_iou", False)
    assert not watching.should_stop(2, {"val/min_iou": 0.0})  # reports, never stops


def test_a_retried_trial_keeps_the_values_and_names_the_trial_it_reruns():
    study = optuna.create_study()
    trial = study.ask()
    SearchSpace(SPACE).sample(trial)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    retry(study, study.trials[0])
    rerun = study.ask()
    assert rerun.user_attrs["seglab.retry_of"] == 0
    assert SearchSpace(SPACE).sample(rerun) == study.trials[0].params


def search(tmp_path: Path, sweep_dir: str, *overrides: str, kill_in_job: int | None = None):
    """A 4-trial two-objective search on debug=smoke in a subprocess; with ``kill_in_job``,
    SIGINT once that job has logged its first epoch (and saved its checkpoint)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [
        sys.executable, "-m", "seglab.train", "-m", "search=pareto", "debug=smoke",
        "trainer.epochs=2", "hydra.sweeper.n_trials=4", "metrics.boundary=false",
        "metrics.gallery=0", "tracking.log_model=false", f"paths.output_dir={tmp_path}",
        f"hydra.sweep.dir={sweep_dir}", *overrides,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    started = False
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        started = started or f"[sweep] job {kill_in_job}/4 started" in line
        if started and line.startswith("epoch 1/2"):
            process.send_signal(signal.SIGINT)
            break
    lines += process.communicate(timeout=600)[0].splitlines(keepends=True)
    return process.returncode, "".join(lines)


@pytest.mark.slow
def test_a_search_killed_in_its_third_trial_resumes_in_the_same_parent(tmp_path, capsys):
    code, output = search(tmp_path, f"{tmp_path}/first", kill_in_job=3)
    assert code != 0, output[-3000:]
    # the two trials left run at once, in two joblib worker processes
    parallel = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2")
    code, output = search(tmp_path, f"{tmp_path}/second", *parallel)
    assert code == 0, output[-3000:]
    assert "[search] study 'seglab.pareto'" in output and "2 of 4 trials done" in output

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(schema.TAG_SWEEP) == schema.SWEEP_PARENT]
    children = [r for r in runs if r.data.tags.get(schema.TAG_PARENT) == parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[schema.TAG_JOBS] == "4"
    assert all(c.info.status == "FINISHED" for c in children)
    # the interrupted trial 2 was rerun as trial 3, which continued its MLflow run
    assert sorted(c.data.tags[schema.TAG_TRIAL] for c in children) == ["0", "1", "3", "4"]
    rerun = next(c for c in children if c.data.tags[schema.TAG_TRIAL] == "3")
    assert rerun.data.params[schema.TRIAL_PARAM] == "2"  # the run trial 2 started
    steps = [m.step for m in client.get_metric_history(rerun.info.run_id, schema.VAL_LOSS)]
    assert steps == [1, 2]
    for child in children:
        assert child.info.run_name.startswith(f"#{child.data.tags[schema.TAG_TRIAL]} ")
        assert child.data.tags[schema.axis_tag("loss")] in ("ce", "focal", "ce_dice", "dice")
        assert {"class_weights.power", "augment.strength"} <= set(child.data.params)

    study = optuna.load_study(study_name="seglab.pareto", storage=f"sqlite:///{tmp_path}/search.db")
    assert "5 trials (4 COMPLETE, 1 RERUN)" in output
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[3].params == study.trials[2].params
    assert study.user_attrs["seglab.parent_run_id"] == parent.info.run_id
    for trial in study.trials[:2] + study.trials[3:]:
        run = next(c for c in children if c.data.tags[schema.TAG_TRIAL] == str(trial.number))
        assert trial.values == [run.data.metrics["val/ce"], run.data.metrics["val/min_iou"]]

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/search_pareto_front.png" in artifacts
    note = parent.data.tags[schema.NOTE]
    assert "## Search: seglab.pareto" in note and "Pareto front" in note
    assert "Best trial by each objective" in output
    # seglab report re-renders the sweep with its search
    assert report_main([f"{tmp_path}/second", f"out={tmp_path}/again"]) == 0
    printed = capsys.readouterr().out
    assert "Search: seglab.pareto" in printed and "4 runs: 4 finished." in printed


def test_on_postgresql_the_study_keeps_its_tables_beside_mlflows_in_schema_optuna():
    import sqlalchemy

    uri = empty_postgres()
    client = MlflowClient(uri)  # MLflow's tables first, as a team's server has them
    client.create_experiment("beside")
    url = storage_url(uri, "/unused")
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    study.add_trial(optuna.create_trial(value=0.5, params={}, distributions={}))
    engine = sqlalchemy.create_engine(uri)
    tables = sqlalchemy.inspect(engine)
    assert {"trials", "studies", "alembic_version"} <= set(tables.get_table_names("optuna"))
    assert "trials" not in tables.get_table_names("public")
    assert {"runs", "experiments", "alembic_version"} <= set(tables.get_table_names("public"))
    engine.dispose()
    assert load_study("s", url).trials[0].value == 0.5
    assert MlflowClient(uri).get_experiment_by_name("beside") is not None  # MLflow's store intact


def finished_study(rows, names=("val/loss", "val/min_iou"), directions=("minimize", "maximize")):
    """An in-memory study of complete trials: ``rows`` of (loss function, value, value)."""
    study = optuna.create_study(study_name="demo.pareto", directions=list(directions))
    with warnings.catch_warnings(category=optuna.exceptions.ExperimentalWarning, action="ignore"):
        study.set_metric_names(list(names))
    choice = optuna.distributions.CategoricalDistribution(["ce", "dice"])
    for loss, *values in rows:
        study.add_trial(
            optuna.create_trial(
                values=values, params={"loss": loss}, distributions={"loss": choice}
            )
        )
    return study


def test_a_loss_objective_gets_one_front_per_loss_function():
    # dice's losses are ~30x CE's: pooled, trial 2 (dice) would be dominated by trial 0
    rows = [("ce", 0.02, 0.1), ("ce", 0.03, 0.5), ("dice", 0.60, 0.4), ("dice", 0.70, 0.3)]
    study = finished_study(rows)
    frame = trials_frame(study, [])
    done = with_front(frame, ["val/loss", "val/min_iou"], ["minimize", "maximize"])
    assert done.front.tolist() == [True, True, True, False]
    assert front_groups(frame, ["val/loss", "val/min_iou"]) == "loss"
    assert front_groups(frame, ["val/ce", "val/min_iou"]) is None  # one currency: one front


def test_the_search_section_names_the_best_trial_of_each_objective_and_the_front():
    rows = [("ce", 0.02, 0.1), ("ce", 0.03, 0.5), ("dice", 0.60, 0.4), ("dice", 0.70, 0.3)]
    report = Report(pd.DataFrame(), pd.DataFrame(), None, {}, ["# t", "verdict", "## Runs"])
    add_search(report, finished_study(rows), [])
    text = report.terminal()
    assert report.blocks[2] == "## Search: demo.pareto" and report.blocks[-1] == "## Runs"
    assert "4 trials (4 COMPLETE), objectives: minimize val/loss, maximize val/min_iou" in text
    best = next(b for b in report.blocks if isinstance(b, Table)).frame
    assert best.objective.tolist() == ["minimize val/loss", "maximize val/min_iou"]
    assert best.trial.tolist() == [0, 1]
    assert "Pareto front (per loss function: a loss is comparable only within one)" in text
    assert set(report.figures) == {"search_pareto_front"}
    assert "No parameter importances" in text or "fANOVA" in text


@pytest.mark.parametrize(
    ("seeds", "retry_of", "extra"),
    [
        ("fixed", None, []),
        ("per_trial", None, ["trainer.seed=7"]),  # trainer.seed 7 + trial 0
        ("fixed", 2, ["resume=auto"]),  # a rerun continues the interrupted trial's run
    ],
)
def test_a_trials_job_gets_its_values_number_seed_and_resume(seeds, retry_of, extra):
    sweep = SearchSweep({"val/min_iou": "maximize"}, {"loss": {"choices": ["dice"]}}, seeds=seeds)
    sweep.config = compose_train("trainer.seed=7")
    study = optuna.create_study(direction="maximize")
    if retry_of is not None:
        study.enqueue_trial({"loss": "dice"}, user_attrs={"seglab.retry_of": retry_of})
    trial = study.ask()
    assert sweep.trial_overrides(trial, ["debug=smoke"]) == [
        "debug=smoke", "loss=dice", "trial=0", *extra
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["loss=ce,dice"], r"\['loss=ce,dice'\] is a sweep"), (["trainer.seed=range(3)"], "sweep")],
)
def test_a_sweep_on_the_command_line_is_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        fixed_overrides(arguments)
    assert fixed_overrides(["debug=smoke", "loss=ce"]) == ["debug=smoke", "loss=ce"]


@pytest.mark.parametrize(
    ("status", "tags", "metrics", "state"),
    [
        ("FINISHED", {}, {"val/min_iou": 0.4}, "COMPLETE"),
        ("FINISHED", {"seglab.pruned_at_epoch": "2"}, {"val/min_iou": 0.1}, "PRUNED"),
        ("FAILED", {"seglab.failure_reason": "ValueError: x"}, {"val/min_iou": 0.1}, "FAIL"),
        ("FINISHED", {}, {"val/miou": 0.5}, "FAIL"),  # the objective was never logged
        ("FINISHED", {}, {"val/min_iou": float("nan")}, "FAIL"),
    ],
)
def test_each_trial_is_told_what_its_run_logged(sqlite_uri, status, tags, metrics, state):
    tracker = MlflowTracker(tracking_uri=sqlite_uri)
    parent = tracker.open_run({}, "parent")
    run = tracker.client.create_run(
        tracker.experiment_id(), tags={"mlflow.parentRunId": parent, "seglab.trial": "0", **tags}
    )
    for key, value in metrics.items():
        tracker.client.log_metric(run.info.run_id, key, value, step=1)
    tracker.client.set_terminated(run.info.run_id, status)
    sweep = SearchSweep({"val/min_iou": "maximize"}, {"loss": {"choices": ["dice"]}})
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    sweep.tell(study, trial, tracker, parent, job=None)
    assert study.trials[0].state.name == state
    assert study.trials[0].values == ([0.4] if state == "COMPLETE" else None)


def test_a_sweeps_runs_leave_out_an_interrupted_trials_run_another_trial_started_over(sqlite_uri):
    tracker = MlflowTracker(tracking_uri=sqlite_uri)
    parent = tracker.open_run({}, "parent")
    made = {}
    for name, status, tags in [
        ("#2 killed before its first checkpoint", "KILLED", {"seglab.retried_as_trial": "3"}),
        ("#3 the rerun, from scratch", "FINISHED", {}),
        ("#4 killed, resumed by its rerun", "FINISHED", {"seglab.retried_as_trial": "5"}),
        ("#6 failed", "FAILED", {}),
    ]:
        run = tracker.client.create_run(
            tracker.experiment_id(), run_name=name, tags={"mlflow.parentRunId": parent, **tags}
        )
        tracker.client.set_terminated(run.info.run_id, status)
        made[name] = run.info.run_id
    names = [r.info.run_name for r in child_runs(tracker.client, parent)]
    assert names == [
        "#3 the rerun, from scratch", "#4 killed, resumed by its rerun", "#6 failed"
    ]  # fmt: skip
    assert tracker.client.get_run(made["#2 killed before its first checkpoint"])  # kept in MLflow


class StopsAfter:
    """A trial whose pruner stops it after ``epoch``; records what the run reported."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.reported: list[int] = []

    def should_stop(self, epoch: int, metrics) -> bool:
        assert schema.VAL_MIN_IOU in metrics
        self.reported.append(epoch)
        return epoch >= self.epoch


@pytest.mark.slow
def test_a_pruned_trial_stops_after_that_epoch_and_finishes_tagged_not_failed(
    tmp_path, monkeypatch
):
    from seglab import train

    trial = StopsAfter(1)
    monkeypatch.setattr(train, "search_trial", lambda number, classes: trial)
    cfg = compose_train(
        "debug=smoke", "trainer.epochs=3", "metrics.boundary=false", "metrics.gallery=0",
        "tracking.log_model=false", f"paths.output_dir={tmp_path}",
    )  # fmt: skip
    final = train.run(cfg)
    assert final.epoch == 1 and trial.reported == [1]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags[schema.TAG_PRUNED] == "1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, schema.VAL_LOSS)] == [1]
