"""``hydra/sweeper=optuna``: a search of Optuna's ask-and-tell over ``hydra.sweeper.space``.

Each trial samples the space (:mod:`seglab.search.space`), runs as one job of the launcher
(basic, joblib, submitit: whatever ``hydra/launcher`` says, ``n_jobs`` trials at a time) and is
told the latest logged value of each objective in its MLflow run, FAIL when the run failed,
PRUNED when the pruner stopped it (:mod:`seglab.search.trial`). The study lives beside the
MLflow store (:mod:`seglab.tracking.study`): running the same search again resumes it, and a
trial that a stopped sweep left unfinished runs again with its values, resuming its MLflow run
(``resume=auto``).

Why seglab's own sweeper: ``hydra-optuna-sweeper`` 1.3 pins Optuna 2, whose database storage
fails under SQLAlchemy 2 (which MLflow 3 needs), and its 1.4 pre-releases need a pre-release
hydra-core. Optuna's ask-and-tell interface is all a sweeper needs.
"""

from __future__ import annotations

import math
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from seglab import schema
from seglab.analysis.search import rerun_numbers
from seglab.config import check_overrides
from seglab.search import options
from seglab.search.space import SearchSpace, Suggests, overrides
from seglab.tracking import study as studies
from seglab.tracking.sweep import start_sweep

if TYPE_CHECKING:
    import optuna
    from hydra.plugins.launcher import Launcher


class SearchSweep:
    """What ``hydra/sweeper=optuna`` does (the plugin class in ``hydra_plugins`` delegates here).

    Args:
        objectives: Metric key -> ``minimize`` or ``maximize``; several make the search
            multi-objective (its report shows their Pareto front).
        space: The search space (:class:`~seglab.search.space.SearchSpace`).
        n_trials: Trials the study holds when done, counting those earlier sweeps of it ran.
        n_jobs: Trials launched at a time.
        sampler: ``{name, seed, ...}`` (:func:`seglab.search.options.sampler`).
        pruner: ``{name, ...}`` (:func:`seglab.search.options.pruner`); one objective only.
        seeds: ``fixed``: every trial trains with ``trainer.seed``; ``per_trial``: with
            ``trainer.seed`` + the trial number.
        study_name: The study; ``None``: ``<experiment>.<search>``
            (:func:`seglab.tracking.study.study_name`).
        storage: Optuna's database URL; ``None``: beside the MLflow store.
        heartbeat: Seconds between the sweep's heartbeats; a trial of a sweep silent for three
            is stale and runs again.
    """

    def __init__(
        self,
        objectives: Mapping[str, str],
        space: Mapping[str, Any],
        n_trials: int = 12,
        n_jobs: int = 1,
        sampler: Mapping[str, Any] | None = None,
        pruner: Mapping[str, Any] | None = None,
        seeds: str = "fixed",
        study_name: str | None = None,
        storage: str | None = None,
        heartbeat: int = 60,
    ) -> None:
        self.objectives = options.objectives(objectives)
        self.space = SearchSpace(space)
        for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs), ("heartbeat", heartbeat)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"hydra.sweeper.{name}={value!r} must be an integer >= 1")
        options.check_seeds(seeds)
        self.sampler_options = dict(sampler or {})
        self.pruner = options.pruner(dict(pruner or {}))
        if self.pruner is not None:
            options.check_pruned_objective(self.objectives)
        options.sampler(self.sampler_options, False)  # checked now, made with the study
        self.n_trials, self.n_jobs, self.seeds = n_trials, n_jobs, seeds
        self.heartbeat = heartbeat
        del study_name, storage  # read from the whole config (seglab.tracking.study), as the
        # sweep's callback reads them before this sweeper exists
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def prepare(self, arguments: list[str], validate: Any) -> tuple[list[str], optuna.Study]:
        """Checks the search before any run and opens its study: ``arguments`` (the command
        line's overrides) are fixed for every trial; ``validate(batch)`` composes a batch of
        overrides (Hydra's check). Returns the fixed overrides and the study."""
        fixed = fixed_overrides(arguments)
        self.check_space(fixed, validate)
        return fixed, self.open_study()

    def run(self, fixed: list[str], study: optuna.Study) -> None:
        """Opens (or reopens) the sweep's parent run and runs the trials the study lacks."""
        assert self.config is not None and self.launcher is not None
        url = studies.study_storage(self.config)
        tracker = start_sweep(
            self.config,
            self.n_trials,
            self.space.keys,
            {"study": study.study_name, "storage": url},
            study.user_attrs.get(schema.STUDY_PARENT),
        )
        parent = tracker.run_id
        study.set_user_attr(schema.STUDY_PARENT, parent)
        done = finished_count(study)
        print(
            f"[search] study {study.study_name!r} in {studies.safe_url(url)}: "
            f"{done} of {self.n_trials} trials done; objectives "
            + ", ".join(f"{d} {m}" for m, d in self.objectives.items()),
            flush=True,
        )
        beating: dict[int, int] = {}  # trial number -> id, while its job runs
        stop = threading.Event()
        heart = threading.Thread(target=self.beat, args=(study, beating, stop), daemon=True)
        heart.start()
        try:
            while (todo := self.n_trials - started_count(study)) > 0:
                trials = [study.ask() for _ in range(min(self.n_jobs, todo))]
                # Optuna's storage keys heartbeats by trial id, which Trial keeps private.
                beating.update({t.number: t._trial_id for t in trials})
                batch = [self.trial_overrides(t, fixed) for t in trials]
                try:
                    returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
                except BaseException:  # Ctrl-C, SIGTERM: the unfinished trials run again
                    for trial in trials:
                        run = trial_run(tracker, parent, trial.number)
                        if run is not None and run.info.status == "FINISHED":
                            self.tell(study, trial, tracker, parent, None)
                        else:
                            study.tell(trial, state=_state("FAIL"))
                            studies.retry(study, study.trials[trial.number])
                    mark_retried(study, tracker, parent)
                    raise
                for trial, job in zip(trials, returns, strict=True):
                    self.tell(study, trial, tracker, parent, job)
                    beating.pop(trial.number, None)
        finally:
            stop.set()
        mark_retried(study, tracker, parent)

    def check_space(self, fixed: list[str], validate: Any) -> None:
        """Every parameter's key, and each choice of a group, composes with the fixed
        overrides: one line naming the parameter before any run."""
        for probe in self.space.probes():
            key = list(probe)[-1]
            param = self.space.parameters[key]
            values = param.choices if param.kind == "choices" else (param.example(),)
            for value in values:
                given = overrides({**probe, key: value})
                try:
                    check_overrides(given)
                    validate([[*fixed, *given]])
                except Exception as error:
                    first = str(error).strip().splitlines()[0]
                    raise ValueError(
                        f"hydra.sweeper.space.{key}: {' '.join(given)} does not compose: {first}"
                    ) from None

    def open_study(self) -> optuna.Study:
        """The study, created or loaded; stale trials of a stopped sweep queued again."""
        import optuna

        assert self.config is not None
        name, url = studies.study_name(self.config), studies.study_storage(self.config)
        storage = studies.open_storage(url, self.heartbeat)
        existing = studies.find_study(name, storage)
        directions = list(self.objectives.values())
        if existing is not None and existing_directions(existing) != directions:
            raise ValueError(
                f"hydra.sweeper.study_name={name!r}: that study optimises "
                f"{existing_directions(existing)}, these objectives {directions}; name a new "
                "study (hydra.sweeper.study_name=...)"
            )
        # Optuna warns that heartbeats belong to Study.optimize: this sweep records them itself.
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        # A resumed search's sampler starts where the study is: seeded as at its first sweep,
        # it would sample that sweep's trials again.
        seeded = dict(self.sampler_options)
        if seeded.get("seed") is not None and existing is not None:
            seeded["seed"] = int(seeded["seed"]) + len(existing.trials)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=options.sampler(seeded, len(directions) > 1),
            pruner=self.pruner,
            directions=cast(list[Any], directions),
            load_if_exists=True,
        )
        study.set_metric_names(list(self.objectives))
        optuna.storages.fail_stale_trials(study)
        return study

    def trial_overrides(self, trial: optuna.Trial, fixed: list[str]) -> list[str]:
        """A trial's job: the fixed overrides, its sampled values, its number, its seed, and
        ``resume=auto`` when it reruns an interrupted trial."""
        assert self.config is not None
        given = [
            *fixed,
            *overrides(self.space.sample(cast(Suggests, trial))),
            f"{schema.TRIAL_PARAM}={trial.number}",
        ]
        if self.seeds == "per_trial":
            given.append(f"trainer.seed={int(self.config.trainer.seed) + trial.number}")
        if schema.TRIAL_RETRY_OF in trial.user_attrs:
            given.append("resume=auto")
        return given

    def tell(
        self, study: optuna.Study, trial: optuna.Trial, tracker: Any, parent: str, job: Any
    ) -> None:
        """Tells ``trial`` what its run logged: the objectives' latest values, PRUNED when the
        pruner stopped it, FAIL (with the reason printed) otherwise."""
        run = trial_run(tracker, parent, trial.number)
        reason = None
        if run is None:
            reason = "no MLflow run" + ("" if job is None else f" ({job.status})")
        elif run.info.status != "FINISHED":
            reason = f"{run.info.status}: {run.data.tags.get(schema.TAG_FAILURE_REASON, '')}"
        elif missing := [m for m in self.objectives if m not in run.data.metrics]:
            reason = f"its run logged no {missing}"
        if reason is not None:
            study.tell(trial, state=_state("FAIL"))
            print(f"[search] trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)
            return
        values = [run.data.metrics[m] for m in self.objectives]
        if schema.TAG_PRUNED in run.data.tags:
            study.tell(trial, state=_state("PRUNED"))
            state = f"pruned after epoch {run.data.tags[schema.TAG_PRUNED]}"
        elif not all(math.isfinite(v) for v in values):
            study.tell(trial, state=_state("FAIL"))
            state = "failed: an objective is not finite"
        else:
            study.tell(trial, values)
            state = "complete"
        shown = ", ".join(f"{m} {v:.4f}" for m, v in zip(self.objectives, values, strict=True))
        print(f"[search] trial {trial.number} {state}: {shown}", flush=True)

    def beat(self, study: optuna.Study, beating: Mapping[int, int], stop: threading.Event) -> None:
        """Records a heartbeat for every running trial of this sweep until ``stop``."""
        storage = study._storage
        while not stop.wait(self.heartbeat):
            for trial_id in list(beating.values()):
                storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]


def _state(name: str) -> Any:
    import optuna

    return optuna.trial.TrialState[name]


def fixed_overrides(arguments: Sequence[str]) -> list[str]:
    """The command line's overrides, every trial's; a sweep among them is refused (the
    search samples, it does not iterate)."""
    parsed = OverridesParser.create().parse_overrides(list(arguments))
    if swept := [o.input_line for o in parsed if o.is_sweep_override()]:
        raise ValueError(
            f"hydra/sweeper=optuna samples its space; {swept} is a sweep: write it in "
            "hydra.sweeper.space (e.g. loss: {choices: [ce, dice]})"
        )
    return list(arguments)


def existing_directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def started_count(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: all but those rerun as another trial."""
    trials = study.trials  # one read of the storage
    rerun = rerun_numbers(trials)
    return sum(1 for t in trials if t.number not in rerun)


def finished_count(study: optuna.Study) -> int:
    """Trials complete, pruned or failed (not rerun)."""
    trials = study.trials
    rerun = rerun_numbers(trials)
    return sum(1 for t in trials if t.state.is_finished() and t.number not in rerun)


def trial_run(tracker: Any, parent: str, number: int) -> Any:
    """The MLflow run of trial ``number`` under ``parent`` (the latest), or ``None``."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id()],
        filter_string=(
            f"tags.`{schema.TAG_PARENT}` = '{parent}' and tags.`{schema.TAG_TRIAL}` = '{number}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def mark_retried(study: optuna.Study, tracker: Any, parent: str) -> None:
    """Tags each unfinished run of an interrupted trial with the trial that reruns it (the
    sweep's report then counts the rerun, not the interrupted run)."""
    for trial in study.trials:
        number = trial.user_attrs.get(schema.TRIAL_RETRY_OF)
        run = None if number is None else trial_run(tracker, parent, number)
        if run is not None and run.info.status != "FINISHED":
            tracker.client.set_tag(run.info.run_id, schema.TAG_RETRIED_AS, str(trial.number))
