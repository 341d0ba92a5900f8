"""A search trial, seen from its training job: its objectives checked against the data's
classes, its objective reported to Optuna every epoch, and the pruner's call.

A job of ``hydra/sweeper=optuna`` gets ``trial=<number>``; it finds the study through its sweep
(``sweep.json`` and ``hydra.sweeper``), reports the single objective's value after each epoch
(Optuna reports one objective only) and stops training when the study's pruner says so: the run
ends FINISHED, tagged ``seglab.pruned_at_epoch``, and the sweep tells the trial PRUNED.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seglab import schema
from seglab.search import options
from seglab.tracking import study as studies

if TYPE_CHECKING:
    import optuna


class TrialReporter:
    """Reports one objective of trial ``trial`` of ``study`` each epoch; asks the pruner."""

    def __init__(self, trial: optuna.Trial, objective: str, prunes: bool) -> None:
        self.trial = trial
        self.objective = objective
        self.prunes = prunes

    @classmethod
    def of_job(
        cls,
        number: int | None,
        sweeper: Any,
        sweep: Mapping[str, Any] | None,
        class_names: Sequence[str],
    ) -> TrialReporter | None:
        """The reporter of a search's job (``None`` outside one, or for several objectives);
        raises naming an objective whose class the data does not have.

        Args:
            number: The job's ``trial``.
            sweeper: ``hydra.sweeper`` of the job.
            sweep: The sweep's ``sweep.json`` (``None`` outside a sweep): where the study is.
            class_names: The data's classes.
        """
        if number is None or sweep is None or not studies.is_search(sweeper):
            if number is not None:
                raise ValueError(
                    f"trial={number} is set by hydra/sweeper=optuna for its jobs; leave it null"
                )
            return None
        objectives = options.objectives(sweeper.objectives)
        check_classes(objectives, class_names)
        if len(objectives) > 1:
            return None
        import optuna

        pruner = options.pruner(sweeper.get("pruner") or {})
        study = optuna.load_study(
            study_name=sweep["study"], storage=studies.open_storage(sweep["storage"]), pruner=pruner
        )
        storage = study._storage
        study_id = storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
        (objective,) = objectives
        return cls(optuna.Trial(study, trial_id), objective, pruner is not None)

    def should_stop(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Reports the objective after ``epoch``; whether the pruner stops the trial."""
        if self.objective not in metrics:  # logged at the end of the run only
            return False
        self.trial.report(float(metrics[self.objective]), step=epoch)
        return self.prunes and self.trial.should_prune()


def check_classes(objectives: Mapping[str, str], class_names: Sequence[str]) -> None:
    """Raises naming a per-class objective whose class is not one of ``class_names``."""
    keys = schema.class_keys(class_names, "the data's classes")
    for metric in objectives:
        parts = metric.split("/")
        if len(parts) == 3 and parts[2] not in keys:
            raise ValueError(
                f"hydra.sweeper.objectives: {metric!r} names no class of the data; the classes "
                f"are {list(class_names)}"
            )
