"""Which run ``resume`` continues, and why another is refused.

A run resumes only with the options it was started with (except those in
:data:`RESUME_MAY_CHANGE`) and the data it was started on (its splits' fingerprints, tag
:data:`seglab.schema.TAG_DATA_FINGERPRINT`), from its last checkpoint, and never while a live
process trains it (:class:`seglab.tracking.runlock.RunLock`): otherwise its history would mix two
setups under one set of params.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from seglab import schema
from seglab.config import current_target
from seglab.core.checks import listed
from seglab.tracking.runlock import RunLock, describe_holder
from seglab.tracking.store import TrackingStore
from seglab.tracking.tracker import MAX_PARAM_LENGTH

# What a resumed run may change: how long it trains, where things go, how fast it runs and what
# its figures show.
RESUME_MAY_CHANGE = (
    "trainer.epochs",
    "resume",
    "trial",  # a search reruns an interrupted trial as a new one, resuming its run
    "trainer.strategy",
    "trainer.jit_compile",
    "trainer.steps_per_execution",
    "trainer.precision",  # checkpoints hold float32 variables in every precision
    "trainer.threads",
    "trainer.progress_seconds",
    "data.cache",
    "metrics.overlays",
    "metrics.gallery",
    "metrics.boundary",
    "paths.",
    "tracking.",
)


def config_changes(logged: Mapping[str, str], config: Mapping[str, str]) -> list[str]:
    """``key: logged -> now`` for every option of ``config`` (flattened) whose value differs
    from the run's logged param, except those in :data:`RESUME_MAY_CHANGE` (a ``_target_`` from
    before seglab's modules moved counts as the same)."""
    changes = []
    for key, value in sorted(config.items()):
        if key not in logged or key.startswith(RESUME_MAY_CHANGE):
            continue
        before = current_target(logged[key]) if key.endswith("_target_") else logged[key]
        if before != value[:MAX_PARAM_LENGTH]:
            changes.append(f"{key}: {logged[key]} -> {value[:MAX_PARAM_LENGTH]}")
    return changes


def data_changes(logged: Mapping[str, str], fingerprint: Mapping[str, str]) -> list[str]:
    """``the <split> split: <then> -> <now>`` for every split whose fingerprint differs from the
    one the run logged (runs logged before fingerprints were kept pass)."""
    tagged = logged.get(schema.TAG_DATA_FINGERPRINT)
    if not tagged:
        return []
    then = json.loads(tagged)
    return [
        f"the {split} split: {then.get(split, 'absent')} -> {now}"
        for split, now in fingerprint.items()
        if then.get(split) != now
    ]


def refusals(run: Run, config: Mapping[str, str], fingerprint: Mapping[str, str]) -> list[str]:
    """Why ``run`` cannot continue with these options and data (nothing when it can)."""
    changes = config_changes(run.data.params, config)
    return changes + data_changes(run.data.tags, fingerprint)


def resumable_run(
    store: TrackingStore,
    resume: bool | str | None,
    checkpoint_root: str | Path,
    config: Mapping[str, str] | None = None,
    fingerprint: Mapping[str, str] | None = None,
) -> str | None:
    """The run ``resume`` names: ``None`` for a new run.

    ``True`` picks the latest run of the experiment that did not finish, has a checkpoint, is
    not being trained by a live process and was started with ``config`` (flattened; see
    :func:`config_changes`) on data of this ``fingerprint`` (split -> its fingerprint), so each
    job of a sweep run again finds its own run; ``"auto"`` picks the same or, when there is none,
    a new run (what a job a scheduler may requeue needs); a string is a run id, which must be
    active (not deleted), have a checkpoint, no live trainer, the same config and data.
    """
    if resume is None or resume is False:
        return None
    root = Path(checkpoint_root)
    config, fingerprint = config or {}, fingerprint or {}
    if resume is True or resume == "auto":
        run_id, skipped = latest_resumable(store, root, config, fingerprint)
        if run_id is not None or resume == "auto":
            return run_id
        raise ValueError(
            f"resume=true: experiment {store.experiment_name!r} has no unfinished run "
            f"with a checkpoint under {root} that no live process trains and that was started "
            "with these options and data" + (f" ({listed(skipped)})" if skipped else "")
        )
    run_id = str(resume)
    try:
        run = store.client.get_run(run_id)
    except MlflowException as error:
        raise ValueError(f"resume={run_id!r}: no such run at {store.uri}") from error
    if run.info.lifecycle_stage != "active":
        raise ValueError(
            f"resume={run_id!r}: the run is {run.info.lifecycle_stage} at {store.uri}; "
            "restore it first (mlflow runs restore --run-id ...) or start a new run"
        )
    if not (root / run_id / "last").is_dir():
        raise ValueError(f"resume={run_id!r}: no checkpoint in {root / run_id}")
    if (held := RunLock.holder(root / run_id)) is not None:
        raise ValueError(f"resume={run_id!r}: {describe_holder(run_id, held)}")
    if changes := refusals(run, config, fingerprint):
        raise ValueError(
            f"resume={run_id!r}: the run was started with other options or data "
            f"({listed(changes)}); resume with its own (only "
            f"{', '.join(key.rstrip('.') for key in RESUME_MAY_CHANGE)} may change)"
        )
    return run_id


def latest_resumable(
    store: TrackingStore,
    root: Path,
    config: Mapping[str, str],
    fingerprint: Mapping[str, str],
) -> tuple[str | None, list[str]]:
    """The latest unfinished run with a checkpoint under ``root``, no live trainer, ``config``
    and data of ``fingerprint``, if any; and why each newer unfinished run was passed over."""
    runs = store.client.search_runs(
        [store.experiment_id()], order_by=["attributes.start_time DESC"]
    )
    skipped = []
    for run in runs:
        run_id = run.info.run_id
        if run.info.status == "FINISHED" or not (root / run_id / "last").is_dir():
            continue
        if (held := RunLock.holder(root / run_id)) is not None:
            skipped.append(describe_holder(run_id, held))
            continue
        if changes := refusals(run, config, fingerprint):
            skipped.append(f"run {run_id} was started with {changes[0]}")
            continue
        return run_id, skipped
    return None, skipped
