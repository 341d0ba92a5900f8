"""The report of a search: its trials, the Pareto front of its objectives, the best trial by
each objective and how much each parameter matters (Optuna's fANOVA), as blocks of the sweep's
:class:`~seglab.analysis.report.Report`.

A loss is comparable only within one loss function: when an objective is a loss (``val/loss``,
``train/loss``) and the search samples ``loss``, the front is drawn per loss function. ``val/ce``
is the same cross-entropy for every loss, the common currency across them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.entities import Run

from seglab import schema
from seglab.analysis.report import Picture, Report, Table
from seglab.core.pareto import pareto_front
from seglab.figures import search as figures

if TYPE_CHECKING:
    import optuna

LOSSES_OF_THEIR_OWN = (schema.VAL_LOSS, schema.TRAIN_LOSS)
LOSS_PARAM = "loss"
FANOVA_SEED = 0  # the importances' random forest: the same study gives the same numbers


def trials_frame(study: optuna.Study, runs: Sequence[Run]) -> pd.DataFrame:
    """One row per trial: number, state (``RERUN``: interrupted, then run again as a later
    trial), its run's name, each objective and each parameter."""
    names = objective_names(study)
    run_names = {r.data.tags.get(schema.TAG_TRIAL): r.info.run_name for r in runs}
    trials = study.trials  # one read of the storage
    rerun = rerun_numbers(trials)
    rows = []
    for trial in trials:
        values = trial.values or [np.nan] * len(names)
        rows.append(
            {
                "trial": trial.number,
                "state": "RERUN" if trial.number in rerun else trial.state.name,
                "run": run_names.get(str(trial.number), ""),
                **dict(zip(names, values, strict=True)),
                **trial.params,
            }
        )
    return pd.DataFrame(rows)


def rerun_numbers(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """The numbers of the trials an interrupted sweep left unfinished and a later trial ran
    again (``seglab.schema.TRIAL_RETRY_OF``)."""
    return {
        t.user_attrs[schema.TRIAL_RETRY_OF] for t in trials if schema.TRIAL_RETRY_OF in t.user_attrs
    }


def objective_names(study: optuna.Study) -> list[str]:
    """The metric each objective is (``study.metric_names``), else ``objective <i>``."""
    return list(study.metric_names or [f"objective {i}" for i in range(len(study.directions))])


def front_groups(frame: pd.DataFrame, names: Sequence[str]) -> str | None:
    """The parameter the front is split by: ``loss`` when a loss is an objective and the search
    samples the loss function, else ``None``."""
    if any(n in LOSSES_OF_THEIR_OWN for n in names) and LOSS_PARAM in frame.columns:
        return LOSS_PARAM
    return None


def with_front(
    frame: pd.DataFrame, names: Sequence[str], directions: Sequence[str]
) -> pd.DataFrame:
    """``frame``'s complete trials with a column ``front``: on the Pareto front of their group."""
    done = frame[frame.state == "COMPLETE"].copy()
    done["front"] = False
    by = front_groups(frame, names)
    groups = [done] if by is None else [g for _, g in done.groupby(by, sort=True)]
    for group in groups:
        mask = pareto_front(group[list(names)].to_numpy(dtype=float), directions)
        done.loc[group.index[mask], "front"] = True
    return done


def importances(study: optuna.Study) -> pd.DataFrame | str:
    """Each parameter's fANOVA importance per objective (parameters every complete trial has),
    or why there is none."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    columns = {}
    for i, name in enumerate(objective_names(study)):

        def value(trial: optuna.trial.FrozenTrial, i: int = i) -> float:
            return float(trial.values[i])

        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=FanovaImportanceEvaluator(seed=FANOVA_SEED), target=value
            )
        except (RuntimeError, ValueError) as error:  # too few trials, or nothing varies
            return f"No parameter importances: {error}"
        columns[name] = found
    frame = pd.DataFrame(columns).rename_axis("parameter").reset_index()
    return frame if len(frame) else "No parameter importances: no parameter varies."


def add_search(report: Report, study: optuna.Study, runs: Sequence[Run]) -> None:
    """Adds the search's blocks and figure to ``report``, after its verdict."""
    names = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    frame = trials_frame(study, runs)
    done = with_front(frame, names, directions)
    params = [c for c in frame.columns if c not in ("trial", "state", "run", *names)]
    states = frame.state.value_counts()
    aims = ", ".join(f"{d} {n}" for n, d in zip(names, directions, strict=True))
    blocks: list[Any] = [
        f"## Search: {study.study_name}",
        f"{len(frame)} trials ({', '.join(f'{n} {s}' for s, n in states.items())}), "
        f"objectives: {aims}; each value is the last one its run logged.",
    ]
    if done.empty:
        blocks.append("No trial is complete: no front, no best trial.")
    else:
        best = [best_row(done, n, d) for n, d in zip(names, directions, strict=True)]
        blocks += [
            "Best trial by each objective:",
            Table(pd.DataFrame(best)[["objective", "trial", "run", *names, *params]]),
        ]
        if len(names) > 1:
            by = front_groups(frame, names)
            figure = "search_pareto_front"
            report.figures[figure] = figures.pareto_front(done, names, directions, by)
            within = (
                "" if by is None else f" (per {by} function: a loss is comparable only within one)"
            )
            blocks += [
                f"Pareto front{within}: the trials no other beats on every objective at once.",
                Table(done.loc[done.front, ["trial", "run", *names, *params]]),
                Picture(
                    figure,
                    f"Every complete trial, {names[0]} against {names[1]}; the "
                    f"front{within} joined by a line. What each gain in one objective costs "
                    "in the other.",
                ),
            ]
        else:
            figure = "search_history"
            report.figures[figure] = figures.objective_history(done, names[0], directions[0])
            blocks.append(
                Picture(
                    figure,
                    f"{names[0]} of every complete trial in order, and the "
                    "best so far: where the search stopped improving.",
                )
            )
        found = importances(study)
        blocks += (
            [found]
            if isinstance(found, str)
            else ["Parameter importance (fANOVA, share of the objective's variance):", Table(found)]
        )
    at = next(
        (i for i, b in enumerate(report.blocks) if isinstance(b, str) and b.startswith("## ")),
        len(report.blocks),
    )
    report.blocks[at:at] = blocks


def best_row(done: pd.DataFrame, name: str, direction: str) -> dict[str, Any]:
    """The complete trial best by objective ``name``."""
    position = int(np.argmax(done[name]) if direction == "maximize" else np.argmin(done[name]))
    return {
        "objective": f"{direction} {name}",
        **{str(k): v for k, v in done.iloc[position].items()},
    }
