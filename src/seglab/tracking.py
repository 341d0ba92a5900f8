"""The only writer to MLflow: run lifecycle, metric keys, params, artifacts and tags.

Tracking URI, first match wins: ``tracking.tracking_uri`` set in the config, then the
``MLFLOW_TRACKING_URI`` environment variable (so a team points every run at an ``mlflow server``
unchanged), then ``sqlite:///<project root>/outputs/mlflow.db``.

Metric keys are paths, logged with ``step = epoch`` (1-based: step 3 is the state after the third
epoch): ``train/loss``, ``val/loss``, ``val/ce``, ``val/miou``, ``val/min_iou``,
``val/pixel_acc``, ``val/class_acc``, ``val/hidden_count`` and per class ``val/iou/<class>``,
``val/dice/<class>``, ``val/recall/<class>``, ``val/predicted_share/<class>``,
``val/loss_share/<class>``, ``val/hidden/<class>``.
At the end of a run: ``val/missed/<class>`` (last epoch) and, when the data has a test split,
``test/...`` (at the step of the best checkpoint, which is what is evaluated).
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import secrets
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seglab import signals
from seglab.runlock import RunLock, describe_holder

TAG_FAILURE_REASON = "seglab.failure_reason"
TAG_RESUMED = "seglab.resumed_at_epoch"
TAG_WORST_CLASS = "seglab.worst_class"
TAG_HIDDEN_FAILURE = "seglab.hidden_failure"
TAG_HIDDEN_CLASSES = "seglab.hidden_failure_classes"
TAG_CLASS_NAMES = "seglab.class_names"  # JSON list, in class index order
NOTE = "mlflow.note.content"  # the MLflow UI shows it as the run's or experiment's description
EXPERIMENT_DESCRIPTION = (
    "seglab runs: each logs the loss next to every class's IoU per epoch (val/loss, "
    "val/iou/<class>, val/min_iou), names the classes whose failure the loss hides "
    "(tag seglab.hidden_failure_classes) and, in a sweep, nests under a parent run holding the "
    "report. Group or filter by the tags seglab.loss, seglab.class_weights, seglab.augment."
)
TAG_MODEL_ERROR = "seglab.model_error"  # why the run has no MLflow model
MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
MAX_PARAM_LENGTH = 6000
MODEL_NAME = "model"  # runs:/<run id>/model
MODEL_REQUIREMENTS = ("seglab", "tensorflow", "keras")
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-. ]{0,199}")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib", ".dill")
URI_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")

log = logging.getLogger(__name__)


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


def uri_scheme(uri: str, where: str) -> str:
    """The scheme of a tracking URI seglab can use (``sqlite``, ``http``...); raises naming
    ``where`` (the option and value) on any other, or on a sqlite URI without three slashes."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if len(scheme) > 1 and scheme not in URI_SCHEMES:
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


def check_existing_store(uri: str, option: str) -> None:
    """For commands that only read runs (report, evaluate, predict): raises naming ``option``
    on a URI seglab cannot use or a sqlite file that does not exist (MLflow would create an
    empty store there, and the command would then find no run)."""
    if uri_scheme(uri, f"{option}={uri!r}") == "sqlite":
        database = sqlite_database(uri)
        if not database.is_file():
            raise ValueError(f"{option}={uri!r}: no MLflow store at {database}")


def resolve_uri(explicit: str | None, default: str) -> tuple[str, str]:
    """The tracking URI and where it came from, first match wins: ``explicit`` (the config's
    ``tracking.tracking_uri``, a CLI option), ``$MLFLOW_TRACKING_URI``, ``default``."""
    if explicit:
        return explicit, "tracking.tracking_uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    return default, "tracking.default_uri"


def default_run_name(tags: Mapping[str, str]) -> str:
    """``<loss>-<class weights>-<6 hex>``: what the run is, and a suffix from the OS's
    randomness (MLflow's own names come from Python's ``random``, which ``trainer.seed`` seeds:
    every seed-0 run would be called the same)."""
    parts = [tags.get(f"seglab.{axis}") for axis in ("loss", "class_weights")]
    return "-".join([*(p for p in parts if p), secrets.token_hex(3)])


# The failure reason of a run the scheduler stopped, after what stopped it.
REQUEUED = "a job the scheduler requeues continues this run with trainer.resume=auto"
# What a resumed run may change: how long it trains, where things go, how fast it runs and what
# its figures show. Every other option must be the run's own, or its history would mix two
# setups under one set of params.
RESUME_MAY_CHANGE = (
    "trainer.epochs",
    "trainer.resume",
    "trainer.strategy",
    "trainer.jit_compile",
    "trainer.steps_per_execution",
    "data.cache",
    "metrics.overlays",
    "metrics.gallery",
    "paths.",
    "tracking.",
)


def config_changes(logged: Mapping[str, str], config: Mapping[str, str]) -> list[str]:
    """``key: logged -> now`` for every option of ``config`` (flattened) whose value differs
    from the run's logged param, except those in :data:`RESUME_MAY_CHANGE`."""
    return [
        f"{key}: {logged[key]} -> {value[:MAX_PARAM_LENGTH]}"
        for key, value in sorted(config.items())
        if key in logged
        and logged[key] != value[:MAX_PARAM_LENGTH]
        and not key.startswith(RESUME_MAY_CHANGE)
    ]


def listed(items: list[str], most: int = 3) -> str:
    """The first ``most`` items joined by ``; ``, and how many more there are."""
    more = f"; and {len(items) - most} more" if len(items) > most else ""
    return "; ".join(items[:most]) + more


def pickle_files(folder: str | Path) -> list[Path]:
    """Files under ``folder`` whose loading would unpickle (run code), by suffix."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` with values as strings (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{path}."))
        else:
            flat[path] = str(value)
    return flat


class MlflowTracker:
    """Opens one MLflow run and writes everything seglab logs into it.

    Args:
        experiment_name: MLflow experiment to log into (created if missing).
        tracking_uri: Explicit tracking URI; ``None`` defers to ``MLFLOW_TRACKING_URI``, then to
            ``default_uri``.
        default_uri: URI used when neither of the above is set.
        artifact_root: Artifact location for experiments this tracker creates in a local
            (sqlite or file) store; ignored for a server, which decides its own.
        run_name: Name shown in the MLflow UI (``None``: the run's loss and class-weight tags and
            a random suffix, drawn apart from the seeded random generators, so runs of the same
            seed do not share a name).
        log_model: Log the best checkpoint as the run's MLflow model ``model`` (1.4 MB and
            0.3-1.5 s per run at the default size).
    """

    def __init__(
        self,
        experiment_name: str = "seglab",
        tracking_uri: str | None = None,
        default_uri: str = "sqlite:///outputs/mlflow.db",
        artifact_root: str | None = None,
        run_name: str | None = None,
        log_model: bool = True,
    ) -> None:
        if not EXPERIMENT_NAME.fullmatch(experiment_name):
            raise ValueError(
                f"tracking.experiment_name={experiment_name!r}: use letters, digits and "
                "'_-. ' only, not starting with '.' (it names a folder under the artifact root)"
            )
        self.experiment_name = experiment_name
        self.log_model_enabled = log_model
        self.uri, self.uri_source = resolve_uri(tracking_uri, default_uri)
        self.artifact_root = artifact_root
        self.run_name = run_name
        self._run_id: str | None = None
        self._client: RetryingClient | None = None

    @property
    def run_id(self) -> str:
        """The open run's id; raises when no run is open."""
        if self._run_id is None:
            raise RuntimeError("no MLflow run is open: start_run() first, or set run_id")
        return self._run_id

    @run_id.setter
    def run_id(self, value: str) -> None:
        self._run_id = value

    @property
    def client(self) -> MlflowClient:
        """The store's client; every call retries while sqlite is locked (a
        :class:`RetryingClient` standing in for an ``MlflowClient``)."""
        if self._client is None:
            for name in ("alembic", "mlflow.store.db.utils"):  # schema-migration chatter
                logging.getLogger(name).setLevel(logging.WARNING)
            if self.uri.startswith("sqlite:///"):
                # Opening the store creates or migrates its schema: one process at a time, or
                # two runs starting on a fresh store race and one dies in the migration.
                with store_lock(sqlite_database(self.uri)):
                    client = MlflowClient(tracking_uri=self.uri)
                    client.search_experiments(max_results=1)
            else:
                client = MlflowClient(tracking_uri=self.uri)
            self._client = RetryingClient(client)
        return cast(MlflowClient, self._client)

    def check(self) -> None:
        """Fails fast, before any training, on a malformed or unreachable tracking URI."""
        where = f"{self.uri_source}={self.uri!r}"
        scheme = uri_scheme(self.uri, where)
        if scheme == "sqlite":
            database = sqlite_database(self.uri)
            folder = database.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=folder):
                    pass
            except OSError as error:
                raise ValueError(f"{where}: cannot write to {folder}: {error}") from error
            if database.exists() and not os.access(database, os.R_OK | os.W_OK):
                raise ValueError(f"{where}: the store {database} is not readable and writable")
        if scheme in ("http", "https"):
            try:
                with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=5):
                    pass
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"{where}: cannot reach the MLflow server ({error}); start it, fix the "
                    "address, or unset MLFLOW_TRACKING_URI to use the local store"
                ) from error
        self.experiment_id()

    def resumable_run(
        self,
        resume: bool | str | None,
        checkpoint_root: str | Path,
        config: Mapping[str, str] | None = None,
    ) -> str | None:
        """The run ``trainer.resume`` names: ``None`` for a new run.

        ``True`` picks the latest run of the experiment that did not finish, has a checkpoint,
        is not being trained by a live process (:class:`seglab.runlock.RunLock`) and was started
        with ``config`` (flattened; see :func:`config_changes`), so each job of a sweep run
        again finds its own run; ``"auto"`` picks the same or, when there is none, a new run
        (what a job a scheduler may requeue needs); a string is a run id, which must have a
        checkpoint, no live trainer and the same config.
        """
        if resume is None or resume is False:
            return None
        root = Path(checkpoint_root)
        if resume is True or resume == "auto":
            run_id, skipped = self._latest_resumable(root, config or {})
            if run_id is not None or resume == "auto":
                return run_id
            raise ValueError(
                f"trainer.resume=true: experiment {self.experiment_name!r} has no unfinished run "
                f"with a checkpoint under {root} that no live process trains and that was "
                "started with these options" + (f" ({listed(skipped)})" if skipped else "")
            )
        run_id = str(resume)
        try:
            logged = self.client.get_run(run_id).data.params
        except MlflowException as error:
            raise ValueError(f"trainer.resume={run_id!r}: no such run at {self.uri}") from error
        if not (root / run_id / "last").is_dir():
            raise ValueError(f"trainer.resume={run_id!r}: no checkpoint in {root / run_id}")
        if (held := RunLock.holder(root / run_id)) is not None:
            raise ValueError(f"trainer.resume={run_id!r}: {describe_holder(run_id, held)}")
        if changes := config_changes(logged, config or {}):
            raise ValueError(
                f"trainer.resume={run_id!r}: the run was started with other options "
                f"({listed(changes)}); resume with its own (only "
                f"{', '.join(key.rstrip('.') for key in RESUME_MAY_CHANGE)} may change)"
            )
        return run_id

    def _latest_resumable(
        self, root: Path, config: Mapping[str, str]
    ) -> tuple[str | None, list[str]]:
        """The latest unfinished run with a checkpoint under ``root``, no live trainer and
        ``config``, if any; and why each newer unfinished run was passed over."""
        runs = self.client.search_runs(
            [self.experiment_id()], order_by=["attributes.start_time DESC"]
        )
        skipped = []
        for run in runs:
            run_id = run.info.run_id
            if run.info.status == "FINISHED" or not (root / run_id / "last").is_dir():
                continue
            if (held := RunLock.holder(root / run_id)) is not None:
                skipped.append(describe_holder(run_id, held))
                continue
            if changes := config_changes(run.data.params, config):
                skipped.append(f"run {run_id} was started with {changes[0]}")
                continue
            return run_id, skipped
        return None, skipped

    def logged_steps(self, key: str) -> list[int]:
        """Steps at which ``key`` was logged in this run."""
        return sorted(m.step for m in self.client.get_metric_history(self.run_id, key))

    def metric_values(self, key: str) -> list[float]:
        """The values of ``key`` logged in this run, in step order."""
        history = self.client.get_metric_history(self.run_id, key)
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    def experiment_id(self) -> str:
        """Id of the experiment, creating it (race-safe) on first use."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.artifact_root and not self.uri.startswith(("http://", "https://", "databricks")):
            location = Path(self.artifact_root, self.experiment_name).resolve().as_uri()
        try:
            experiment_id = self.client.create_experiment(
                self.experiment_name, location, tags={NOTE: EXPERIMENT_DESCRIPTION}
            )
        except MlflowException:  # created meanwhile by a parallel job
            created = self.client.get_experiment_by_name(self.experiment_name)
            if created is None:
                raise
            return created.experiment_id
        return experiment_id

    def runs_url(self, host: str = "http://127.0.0.1:5000") -> str:
        """The MLflow UI's page of this experiment's training runs (not its GenAI overview)."""
        return f"{host}/#/experiments/{self.experiment_id()}/runs?workflowType=machine_learning"

    @contextmanager
    def start_run(
        self, tags: Mapping[str, str] | None = None, resume_run_id: str | None = None
    ) -> Iterator[MlflowTracker]:
        """Opens a run (or reopens ``resume_run_id``); it ends FINISHED, FAILED (reason tagged)
        or KILLED (Ctrl-C/SIGTERM, or preempted by the scheduler)."""
        if resume_run_id is None:
            tags = dict(tags or {})
            name = self.run_name or default_run_name(tags)
            run = self.client.create_run(self.experiment_id(), run_name=name, tags=tags)
            self.run_id = run.info.run_id
        else:
            self.run_id = resume_run_id
            self.client.update_run(resume_run_id, status="RUNNING")
            if TAG_FAILURE_REASON in self.client.get_run(resume_run_id).data.tags:
                self.client.delete_tag(resume_run_id, TAG_FAILURE_REASON)
        log.info(
            "MLflow run %s in experiment %r at %s", self.run_id, self.experiment_name, self.uri
        )
        try:
            yield self
        except KeyboardInterrupt:
            signals.acknowledge()  # or ending the run would raise it again
            self._end(RunStatus.KILLED, "interrupted (Ctrl-C or SIGTERM)")
            raise
        except signals.Preempted as preempted:
            signals.acknowledge()
            self._end(RunStatus.KILLED, f"{preempted}: {REQUEUED}")
            raise
        except BaseException as error:
            self._end(RunStatus.FAILED, f"{type(error).__name__}: {error}")
            raise
        else:
            self._end(RunStatus.FINISHED)

    def _end(self, status: int, reason: str | None = None) -> None:
        if reason:
            self.set_tags({TAG_FAILURE_REASON: reason})
        self.client.set_terminated(self.run_id, RunStatus.to_string(status))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """All metrics of one step in one batched call."""
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

    def log_config(self, config: Mapping[str, Any], yaml_text: str) -> None:
        """The resolved config, flattened into params and whole as ``config.yaml``."""
        self.log_params(flatten(config))
        self.log_text(yaml_text, "config.yaml")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tags as strings, cut to MLflow's length limit (a failure reason can be long)."""
        items = [RunTag(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in tags.items()]
        self.client.log_batch(self.run_id, tags=items)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        """Logs a figure as an image artifact and closes it."""
        self.client.log_figure(self.run_id, figure, artifact_file)
        plt.close(figure)

    def log_table(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """A data frame as CSV (lossless) under ``artifact_file``."""
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        self.log_text(buffer.getvalue(), artifact_file)

    def log_model(
        self, model: keras.Model, example: np.ndarray, epoch: int, metadata: Mapping[str, Any]
    ) -> str:
        """Logs ``model`` as this run's MLflow model ``model`` (TensorFlow flavour); returns its
        URI, ``runs:/<run id>/model``.

        The model carries a tensor signature of ``example`` (one input image, also saved as the
        input example) and of the model's output, ``metadata`` (class names, colours: what
        :mod:`seglab.predict` needs) and is linked to the run's metrics at step ``epoch``. The
        model is Keras' native ``data/model.keras``; the pickle of Keras' registry of custom
        objects that the flavour adds is removed before upload (:data:`PICKLE_SUFFIXES`):
        loading a pickle runs code, and seglab's loss and metrics load by their registered
        names wherever seglab is imported.
        """
        import mlflow.tensorflow  # imported here: the flavour pulls in much of MLflow's models
        from mlflow.entities import LoggedModelOutput
        from mlflow.models import Model, infer_signature

        logged = self.client.create_logged_model(
            self.experiment_id(), name=MODEL_NAME, source_run_id=self.run_id
        )
        # The output's shape and dtype are the model's own: no prediction (and no retrace) needed.
        (output,) = model.outputs
        signature = infer_signature(example, np.zeros((1, *output.shape[1:]), output.dtype))
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / MODEL_NAME
            mlflow.tensorflow.save_model(
                model,
                str(local),
                signature=signature,
                input_example=example,
                pip_requirements=[
                    f"{package}=={version(package)}" for package in MODEL_REQUIREMENTS
                ],
                metadata=dict(metadata),
                mlflow_model=Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=logged.model_id,
                    run_id=self.run_id,
                    model_id=logged.model_id,
                ),
            )
            for pickled in pickle_files(local):
                pickled.unlink()
            self.client.log_model_artifacts(logged.model_id, str(local))
        self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=epoch)])
        self.client.finalize_logged_model(logged.model_id, "READY")
        return f"runs:/{self.run_id}/{MODEL_NAME}"

    def log_gallery(self, picture: np.ndarray, class_name: str, epoch: int) -> None:
        """A failure gallery (:mod:`seglab.gallery`) as the image ``gallery/<class>`` at step
        ``epoch``: the MLflow UI's step slider walks through the epochs."""
        key = "gallery/" + re.sub(r"[^A-Za-z0-9_\-. ]", "_", class_name)
        self.client.log_image(self.run_id, picture, key=key, step=epoch)

    def log_parquet(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """A data frame as Parquet (typed, compact) under ``artifact_file``."""
        path = Path(artifact_file)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / path.name
            frame.to_parquet(local, index=False)
            self.client.log_artifact(
                self.run_id, str(local), str(path.parent) if path.parent != Path(".") else None
            )

    def open_run(self, tags: Mapping[str, str], run_name: str) -> str:
        """Creates a run that outlives this process's block (a sweep's parent); returns its id
        and makes it this tracker's run. :meth:`terminate` ends it."""
        run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        return self.run_id

    def terminate(self, status: str) -> None:
        """Ends this tracker's run with ``status`` (``FINISHED``, ``FAILED``, ``KILLED``)."""
        self.client.set_terminated(self.run_id, status)
