"""The MLflow tracking store seglab writes to and reads from: which one, whether it can be used,
and a client that waits while a shared sqlite file is busy.

Tracking URI, first match wins: an explicit URI (``tracking.tracking_uri`` in the config, or a
command's option), then the ``MLFLOW_TRACKING_URI`` environment variable (so a team points every
run at an ``mlflow server`` unchanged), then :func:`default_uri`:
``sqlite:///<project root>/outputs/mlflow.db``.

seglab uses a database store (sqlite, PostgreSQL, MySQL, SQL Server) or a tracking server
(``http(s)://``, Databricks). MLflow's file store (``file://`` URIs and plain paths) is in
maintenance mode, and it keeps one class's metric as a file where another class's would need a
folder of the same name: it is refused with the URI to use instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seglab import schema, signals
from seglab.analysis.links import UiLinks, ui_address
from seglab.paths import check_writable, project_root

URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
SQLITE_HEADER = b"SQLite format 3\x00"
EXPERIMENT_DESCRIPTION = (
    "seglab runs: each logs the loss next to every class's IoU per epoch "
    f"({schema.VAL_LOSS}, {schema.VAL_IOU}/<class>, {schema.VAL_MIN_IOU}), names the classes "
    f"whose failure the loss hides (tag {schema.TAG_HIDDEN_CLASSES}) and, in a sweep, nests "
    "under a parent run holding the "
    "report. Group or filter by the tags "
    + ", ".join(schema.axis_tag(axis) for axis in schema.AXES)
    + "."
)

log = logging.getLogger(__name__)


def default_uri() -> str:
    """The project's own store: ``sqlite:///<project root>/outputs/mlflow.db``."""
    return f"sqlite:///{project_root() / 'outputs' / 'mlflow.db'}"


def resolve_uri(explicit: str | None, default: str | None = None) -> tuple[str, str]:
    """The tracking URI and where it came from, first match wins: ``explicit`` (the config's
    ``tracking.tracking_uri``, a command's option), ``$MLFLOW_TRACKING_URI``, ``default``
    (:func:`default_uri` when not given)."""
    if explicit:
        return explicit, "tracking.tracking_uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    return default or default_uri(), "tracking.default_uri"


def uri_scheme(uri: str, where: str) -> str:
    """The scheme of a tracking URI seglab can use (``sqlite``, ``http``...); raises naming
    ``where`` (the option and value) on any other, a file store, or a sqlite URI without three
    slashes."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme == "file" or len(scheme) <= 1:  # a plain path (or a Windows drive) is a file store
        folder = urlparse(uri).path if scheme == "file" else uri
        suggestion = Path(folder or ".").expanduser().resolve() / "mlflow.db"
        raise ValueError(
            f"{where} is a file store, which seglab does not use (MLflow's file store is in "
            f"maintenance mode); use a database: sqlite:///{suggestion}"
        )
    if scheme not in URI_SCHEMES:
        raise ValueError(
            f"{where} is not an MLflow tracking URI: scheme {scheme!r} is not one of "
            f"{list(URI_SCHEMES)} (e.g. sqlite:///abs/path/mlflow.db or http://host:5000)"
        )
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise ValueError(f"{where}: write sqlite URIs as sqlite:///<path>, with three slashes")
    return scheme


def sqlite_database(uri: str) -> Path:
    """The database file of a ``sqlite:///<path>`` tracking URI."""
    return Path(uri.removeprefix("sqlite:///"))


def check_sqlite_file(database: Path, where: str) -> None:
    """Raises naming ``where`` when ``database`` exists but is not a readable, writable SQLite
    database (a text file, say: MLflow would fail on it with a traceback)."""
    if not database.exists():
        return
    if not database.is_file() or not os.access(database, os.R_OK | os.W_OK):
        raise ValueError(f"{where}: the store {database} is not a readable and writable file")
    with open(database, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise ValueError(f"{where}: {database} is not an SQLite database (an MLflow store)")


def check_existing_store(uri: str, where: str) -> None:
    """For commands that only read runs (report, evaluate, predict): raises naming ``where`` on
    a URI seglab cannot use or a sqlite file that does not exist (MLflow would create an empty
    store there, and the command would then find no run) or is no database."""
    if uri_scheme(uri, f"{where}={uri!r}") == "sqlite":
        database = sqlite_database(uri)
        if not database.is_file():
            raise ValueError(f"{where}={uri!r}: no MLflow store at {database}")
        check_sqlite_file(database, f"{where}={uri!r}")


class RetryingClient:
    """An ``MlflowClient`` whose calls retry while sqlite answers "database is locked".

    Parallel sweep jobs share one sqlite file; a writer holding the lock makes the others fail
    at once. Retrying with backoff (about 25 s in all) turns that into waiting. Ctrl-C and
    SIGTERM wait for the call to finish (:func:`seglab.signals.deferred`).
    """

    def __init__(self, client: MlflowClient, attempts: int = 8, delay: float = 0.1) -> None:
        self._client = client
        self._attempts = attempts
        self._delay = delay

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        @signals.deferred()
        def call(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(self._attempts):
                try:
                    return method(*args, **kwargs)
                except Exception as error:
                    if "database is locked" not in str(error) or attempt == self._attempts - 1:
                        raise
                    time.sleep(self._delay * 2**attempt)
            raise AssertionError("unreachable")

        return call


@contextmanager
def store_lock(database: Path) -> Iterator[None]:
    """An OS lock on ``<database>.lock`` for the block (the folder is made if missing)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(uri: str) -> MlflowClient:
    """A :class:`RetryingClient` of ``uri``, the store's schema made or migrated first."""
    for name in ("alembic", "mlflow.store.db.utils"):  # schema-migration chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    if uri.startswith("sqlite:///"):
        # Opening the store creates or migrates its schema: one process at a time, or two runs
        # starting on a fresh store race and one dies in the migration.
        with store_lock(sqlite_database(uri)):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    else:
        client = MlflowClient(tracking_uri=uri)
    return cast(MlflowClient, RetryingClient(client))


class TrackingStore:
    """One MLflow store and one experiment in it.

    Args:
        experiment_name: The experiment (created on first use when missing).
        tracking_uri: Explicit URI; ``None`` defers to ``MLFLOW_TRACKING_URI``, then to
            ``default_uri``.
        default_uri: The URI when neither is set (``None``: :func:`default_uri`).
        artifact_root: Artifact location of the experiments this store creates, when the store
            is local (sqlite); a server decides its own.
    """

    def __init__(
        self,
        experiment_name: str = "seglab",
        tracking_uri: str | None = None,
        default_uri: str | None = None,
        artifact_root: str | None = None,
    ) -> None:
        self.experiment_name = experiment_name
        self.uri, self.uri_source = resolve_uri(tracking_uri, default_uri)
        self.artifact_root = artifact_root
        self._client: MlflowClient | None = None

    @property
    def where(self) -> str:
        """``<where the URI came from>='<uri>'``: how errors name the store."""
        return f"{self.uri_source}={self.uri!r}"

    @property
    def client(self) -> MlflowClient:
        """The store's client (:func:`open_client`), opened on first use."""
        if self._client is None:
            self._client = open_client(self.uri)
        return self._client

    def check(self) -> None:
        """Fails fast, before any training, with one line naming the URI and where it came
        from, on a store that cannot be used: a malformed URI, a file store, a sqlite path
        that is no database or cannot be written, a server or database that does not answer."""
        scheme = uri_scheme(self.uri, self.where)
        if scheme == "sqlite":
            database = sqlite_database(self.uri)
            check_writable(database.parent, self.where)
            check_sqlite_file(database, self.where)
        if scheme in ("http", "https"):
            try:
                with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=5):
                    pass
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"{self.where}: cannot reach the MLflow server ({error}); start it, fix the "
                    "address, or unset MLFLOW_TRACKING_URI to use the local store"
                ) from error
        try:
            self.experiment_id()
        except (MlflowException, OSError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(f"{self.where}: the store cannot be used: {reason}") from error
        except Exception as error:  # a database driver's own error (refused connection...)
            reason = str(error).strip().splitlines()[0]
            raise ValueError(
                f"{self.where}: the store cannot be used: {type(error).__name__}: {reason}"
            ) from error

    def experiment_id(self) -> str:
        """Id of the experiment, creating it (race-safe) on first use."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = None
        if self.artifact_root and not self.uri.startswith(("http://", "https://", "databricks")):
            location = Path(self.artifact_root, self.experiment_name).resolve().as_uri()
        try:
            experiment_id = self.client.create_experiment(
                self.experiment_name,
                location,
                tags={
                    schema.NOTE: EXPERIMENT_DESCRIPTION,
                    schema.EXPERIMENT_KIND: schema.MODEL_TRAINING,
                },
            )
        except MlflowException:  # created meanwhile by a parallel job
            created = self.client.get_experiment_by_name(self.experiment_name)
            if created is None:
                raise
            return str(created.experiment_id)
        return str(experiment_id)

    @property
    def links(self) -> UiLinks:
        """The pages of the MLflow UI that serves this store."""
        return UiLinks(ui_address(self.uri))
