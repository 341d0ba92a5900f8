"""Where a search's Optuna study lives: beside the MLflow store, in tables of its own.

``hydra.sweeper.storage`` (``null``: :func:`storage_url`) is an Optuna database URL:

- MLflow on ``sqlite:///<folder>/mlflow.db``: ``sqlite:///<folder>/search.db``, the file beside
  it (Optuna and MLflow both keep their schema version in a table named ``alembic_version``,
  so one sqlite file cannot hold both);
- MLflow on PostgreSQL: the same database, in the schema ``optuna`` (:data:`PG_SCHEMA`);
- an MLflow server: ``sqlite:///<paths.output_dir>/search.db``.

A study is a search: running the same search again (same ``hydra.sweeper.study_name``) resumes
it, and parallel sweeps of one study share its trials. The study remembers its sweep's MLflow
parent run (``seglab.schema.STUDY_PARENT``), so every trial of a resumed search nests under
one parent.
Concurrent writers are safe by the database's own transactions (sqlite waits up to
:data:`SQLITE_TIMEOUT` seconds for a lock).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from seglab import schema
from seglab.tracking.store import resolve_uri, sqlite_database, uri_scheme

if TYPE_CHECKING:
    import optuna

SWEEPER = "hydra_plugins.seglab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
PG_SCHEMA = "optuna"
SQLITE_TIMEOUT = 60
SEARCH_FILE = "search.db"
DIRECTIONS = ("minimize", "maximize")


def is_search(sweeper: Any) -> bool:
    """Whether a Hydra sweeper config (``hydra.sweeper``) is seglab's Optuna search."""
    return bool(sweeper.get("_target_") == SWEEPER)


def study_name(config: Any) -> str:
    """``hydra.sweeper.study_name``, else ``<experiment>.<search>``: the same search in the same
    experiment resumes one study."""
    given = config.hydra.sweeper.get("study_name")
    search = config.hydra.runtime.choices.get("search") or "search"
    return str(given or f"{config.tracking.experiment_name}.{search}")


def study_storage(config: Any) -> str:
    """``hydra.sweeper.storage``, else the database beside the run's MLflow store."""
    if given := config.hydra.sweeper.get("storage"):
        return str(given)
    uri, _ = resolve_uri(config.tracking.tracking_uri, config.tracking.default_uri)
    return storage_url(uri, config.paths.output_dir)


def storage_url(tracking_uri: str, output_dir: str) -> str:
    """The Optuna storage beside the MLflow store at ``tracking_uri`` (see the module)."""
    scheme = uri_scheme(tracking_uri, f"the MLflow store {tracking_uri!r}")
    if scheme == "sqlite":
        return f"sqlite:///{sqlite_database(tracking_uri).parent / SEARCH_FILE}"
    if scheme == "postgresql":
        return tracking_uri
    return f"sqlite:///{output_dir}/{SEARCH_FILE}"


def open_storage(url: str, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's storage at ``url``: sqlite waiting for locks, PostgreSQL in its own schema;
    ``heartbeat`` seconds: trials whose sweep stopped beating for 3 of them are stale."""
    import optuna
    import sqlalchemy

    # Heartbeats and metric names are "experimental" in Optuna 4-5; its INFO log repeats what
    # the sweep prints.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scheme = urlparse(url).scheme.split("+")[0]
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        sqlite_database(url).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT}
    elif scheme == "postgresql":
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
        engine.dispose()
        engine_kwargs["connect_args"] = {"options": f"-csearch_path={PG_SCHEMA}"}
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=heartbeat,
        grace_period=None if heartbeat is None else 3 * heartbeat,
        heartbeat_stale_trial_callback=None if heartbeat is None else retry,
    )


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queues a trial with ``trial``'s values, marked as its rerun
    (``seglab.schema.TRIAL_RETRY_OF``): a trial a stopped sweep left unfinished runs again,
    resuming its MLflow run."""
    import optuna

    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**trial.user_attrs, schema.TRIAL_RETRY_OF: trial.number},
        )
    )


def load_study(name: str, url: str) -> optuna.Study:
    """The existing study ``name`` at ``url``; raises naming it when there is none."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError as error:
        raise ValueError(f"no study {name!r} in {safe_url(url)}") from error


def find_study(name: str, storage: optuna.storages.RDBStorage) -> optuna.Study | None:
    """The study ``name`` in an opened ``storage``, or ``None``."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def safe_url(url: str) -> str:
    """A database URL without its password, to print."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":***@", 1)
