"""The options of ``hydra/sweeper=optuna`` that the sweep and its jobs both read: objectives,
sampler and pruner, checked when made (one line naming the option, the value and the choices).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from seglab import schema
from seglab.core.checks import check_choice
from seglab.tracking.study import DIRECTIONS

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("tpe", "random", "nsgaii")
PRUNERS = ("none", "median", "hyperband")
SEEDS = ("fixed", "per_trial")


def objectives(given: Mapping[str, Any]) -> dict[str, str]:
    """``hydra.sweeper.objectives``: metric key -> ``minimize`` or ``maximize``, checked."""
    if not given:
        raise ValueError(
            "hydra.sweeper.objectives is empty: name at least one logged metric and its "
            f"direction, e.g. {{{schema.VAL_MIN_IOU}: maximize}}"
        )
    checked = {}
    for metric, direction in given.items():
        where = f"hydra.sweeper.objectives.{metric}"
        if not schema.is_metric_key(str(metric)):
            raise ValueError(
                f"hydra.sweeper.objectives: {metric!r} is not a metric seglab logs; the metrics "
                f"are {', '.join(schema.METRIC_FAMILIES)}"
            )
        check_choice(where, direction, DIRECTIONS)
        checked[str(metric)] = str(direction)
    return checked


def sampler(options: Mapping[str, Any], several: bool) -> optuna.samplers.BaseSampler:
    """``hydra.sweeper.sampler``: ``{name: tpe|random|nsgaii, seed: <int or null>}``; TPE is
    Optuna's multi-objective TPE when there are ``several`` objectives."""
    import optuna

    name = options.get("name", "tpe")
    check_choice("hydra.sweeper.sampler.name", name, SAMPLERS)
    seed = options.get("seed")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsgaii":
        population = int(options.get("population_size", 8))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    startup = int(options.get("n_startup_trials", 4))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=several)


def pruner(options: Mapping[str, Any]) -> optuna.pruners.BasePruner | None:
    """``hydra.sweeper.pruner``: ``{name: none|median|hyperband, ...}``; ``None`` for none."""
    import optuna

    name = options.get("name", "none")
    check_choice("hydra.sweeper.pruner.name", name, PRUNERS)
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(options.get("n_startup_trials", 2)),
            n_warmup_steps=int(options.get("n_warmup_steps", 1)),
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(options.get("min_resource", 1)))
    return None


def check_seeds(seeds: str) -> None:
    """``hydra.sweeper.seeds``: ``fixed`` or ``per_trial``."""
    check_choice("hydra.sweeper.seeds", seeds, SEEDS)


def check_pruned_objective(objectives: Mapping[str, str]) -> None:
    """A pruner compares one objective epoch by epoch: one objective, logged every epoch."""
    if len(objectives) > 1:
        raise ValueError(
            f"hydra.sweeper.pruner: Optuna prunes single-objective studies only; these "
            f"objectives are {list(objectives)} (set hydra.sweeper.pruner.name=none)"
        )
    (metric,) = objectives
    if not schema.is_epoch_metric_key(metric):
        raise ValueError(
            f"hydra.sweeper.pruner: {metric!r} is logged once, at the end of a run; a pruner "
            f"needs an objective logged every epoch ({schema.TRAIN_LOSS}, {schema.VAL}/...)"
        )
