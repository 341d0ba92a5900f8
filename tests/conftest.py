"""Shared fixtures: quiet TensorFlow, no test ever writes to the user's MLflow store, and golden
files for whole texts (``SEGLAB_UPDATE_GOLDEN=1 pytest ...`` rewrites them: review the diff)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from seglab.paths import config_dir

CLASSES = ["background", "disk", "square", "bar", "speck"]  # data=shapes
EPOCH_KEYS = [  # every metric logged once per epoch
    "train/loss",
    "val/loss",
    "val/ce",
    "val/miou",
    "val/min_iou",
    "val/pixel_acc",
    "val/class_acc",
    "val/hidden_count",
    *(
        f"val/{kind}/{name}"
        for kind in ("iou", "dice", "recall", "predicted_share", "loss_share", "hidden")
        for name in CLASSES
    ),
]


@pytest.fixture(scope="session", autouse=True)
def _migrated_sqlite_stores(tmp_path_factory) -> Iterator[None]:
    """A new sqlite store in this process starts as a copy of one store migrated once per worker:
    MLflow runs its ~60 schema migrations (~1 s) for every new file, and the suite makes hundreds.
    The copy holds the tables only; MLflow adds its Default experiment, at the new store's own
    artifact root, as it does for any store without one."""
    import sqlite3

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    template = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{template}", str(template.parent)).engine.dispose()
    with sqlite3.connect(template) as db:
        db.execute("DELETE FROM experiments")
    db.close()
    migrate = SqlAlchemyStore.__init__

    def copy_then_migrate(self, db_uri, default_artifact_root, *args, **kwargs):
        path = Path(db_uri.removeprefix("sqlite:///")) if db_uri.startswith("sqlite:///") else None
        if path is not None and path.is_absolute() and path.parent.is_dir() and not path.exists():
            shutil.copyfile(template, path)
        migrate(self, db_uri, default_artifact_root, *args, **kwargs)

    SqlAlchemyStore.__init__ = copy_then_migrate
    yield
    SqlAlchemyStore.__init__ = migrate


@pytest.fixture(autouse=True)
def _no_external_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def sqlite_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def golden():
    """``golden(name, text)`` asserts ``text`` equals ``tests/golden/<name>`` (a whole report,
    say: every heading, sentence and number as a reader sees it)."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if os.environ.get("SEGLAB_UPDATE_GOLDEN") == "1":
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.is_file(), f"no {path}: write it with SEGLAB_UPDATE_GOLDEN=1 and review it"
        assert text == path.read_text()

    return check


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_serving(backend: str, folder: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 over ``backend`` (artifacts and its log in ``folder``),
    the UI included; yields its address once it answers, stops it at the end."""
    port = free_port()
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(folder / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # no job runner: its store is a folder in /dev/shm that outlives the server
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()}")
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(folder: Path, *args: str, wait_ms: int = 5000) -> str:
    """Runs Debian's headless Chromium with ``args`` (``--dump-dom``, ``--screenshot=...``) and
    ``wait_ms`` of virtual time for the page's scripts; returns its output. Skips, saying why,
    when it is not installed."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("no chromium: .ci/run installs Debian's chromium for the real-browser tests")
    profile = folder / "profile"
    return subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--virtual-time-budget={wait_ms}",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def artifact_paths(client, run_id: str) -> set[str]:
    """Artifact paths of a run, one folder level deep (root files and figures/...)."""
    paths = {a.path for a in client.list_artifacts(run_id)}
    return paths | {a.path for a in client.list_artifacts(run_id, "figures")}


def compose_train(*overrides: str, hydra_config: bool = False):
    """The ``train`` config composed with ``overrides``, as ``python -m seglab.train`` would."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_config)


def empty_postgres() -> str:
    """``$SEGLAB_TEST_POSTGRES_URI`` with its public schema (MLflow's tables) and the schema
    ``optuna`` (a search's study) wiped; skips when it is not set. ``.ci/run`` starts Debian's
    PostgreSQL and sets it; locally, point it at an empty database the test may wipe, e.g.
    ``postgresql://seglab_ci:seglab_ci@127.0.0.1:5432/seglab_ci``."""
    uri = os.environ.get("SEGLAB_TEST_POSTGRES_URI")
    if not uri:
        pytest.skip(
            "no PostgreSQL: SEGLAB_TEST_POSTGRES_URI is not set (.ci/run sets it after starting "
            "Debian's PostgreSQL; it printed why it could not)"
        )
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as connection:  # a previous run's tables would mix into this one's
        connection.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        connection.execute(sqlalchemy.text("DROP SCHEMA IF EXISTS optuna CASCADE"))
    engine.dispose()
    return uri


def run_sweep(tmp_path, *overrides: str, check: bool = True, tracking_uri: str | None = None):
    """``python -m seglab.train -m debug=smoke ...`` in a subprocess (tests/ importable).

    Returns ``(result, client, parent runs, child runs)``; the store is ``tmp_path/mlflow.db``
    unless ``tracking_uri`` (passed as ``MLFLOW_TRACKING_URI``) names another.
    """
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seglab.train",
            "-m",
            "debug=smoke",
            "trainer.epochs=2",
            f"paths.output_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path}/sweep",
            *overrides,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri or f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    parents = [r for r in runs if r.data.tags.get("seglab.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("seglab.sweep") != "parent"]
    return result, client, parents, children


@pytest.fixture
def postgres_server(tmp_path) -> Iterator[str]:
    """``mlflow server`` on PostgreSQL, as a team's (skips without it); its address."""
    with mlflow_serving(empty_postgres(), tmp_path) as uri:
        yield uri


def assert_every_epoch_once(client, run, epochs: int) -> None:
    """``run`` logged every per-epoch metric once for each of ``epochs`` epochs: no point lost,
    none twice (in any order: a resumed run writes its points from two processes)."""
    for key in EPOCH_KEYS:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, epochs + 1)), (run.info.run_name, key)


def assert_children_complete(client, parent, children) -> None:
    """Every child of a 2-epoch smoke sweep FINISHED under ``parent`` with every metric point
    of every epoch and its run artifacts: nothing lost between the jobs and the store."""
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key in EPOCH_KEYS:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == [1, 2], (child.info.run_name, key)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "per_class.csv", "class_weights.csv"} <= artifacts


# Per half-precision type: oneDNN's first instruction set with kernels of that type, and the
# CPU flag with which TensorFlow sends the type to oneDNN whatever the cap.
ONEDNN_FIRST_ISA_WITH = {
    "float16": ("AVX512_CORE_FP16", "avx512_fp16"),
    "bfloat16": ("AVX512_CORE", "avx512f"),
}


def skip_where_capped_below(dtype: str) -> None:
    """Skips the calling test where oneDNN is capped below its ``dtype`` (float16, bfloat16)
    kernels on a CPU whose flags make TensorFlow send ``dtype`` to oneDNN, saying why.

    TensorFlow reads the CPU, not oneDNN's cap, so under such a cap, which ``make
    test-cpu-paths`` sets to stand in for older CPUs, oneDNN finds no kernel ("could not create
    a primitive descriptor"): a combination no real machine has, where an older CPU's
    TensorFlow takes its own kernels. (``trainer.precision=auto`` is float32 under such a cap.)
    """
    # TensorFlow: only for the tests that train
    from seglab.training.runtime import cpu_flags, onednn_capped_below

    isa, flag = ONEDNN_FIRST_ISA_WITH[dtype]
    if onednn_capped_below(isa) and flag in cpu_flags():
        pytest.skip(
            f"ONEDNN_MAX_CPU_ISA is below oneDNN's {dtype} kernels on a CPU TensorFlow "
            f"sends {dtype} to oneDNN on"
        )
