"""A sweep whose jobs run as processes of their own (Hydra's submitit launcher) and log over HTTP
to a real ``mlflow server``: every job nests under the parent, nothing is lost on the way.

The server runs once on an sqlite backend and once on PostgreSQL, the database a team's server
uses. ``.ci/run`` starts Debian's PostgreSQL and sets ``SEGLAB_TEST_POSTGRES_URI``; locally, point
it at an empty database the test may wipe, e.g.
``postgresql://seglab_ci:seglab_ci@127.0.0.1:5432/seglab_ci``.
"""

import os

import pytest
from conftest import assert_children_complete, empty_postgres, mlflow_serving, run_sweep


@pytest.fixture(params=["sqlite", "postgresql"])
def mlflow_server(request, tmp_path):
    """``mlflow server`` on 127.0.0.1 with an sqlite or PostgreSQL backend and a local artifact
    store."""
    if request.param == "sqlite" and os.environ.get("SEGLAB_TEST_POSTGRES_URI"):
        # The quick local variant; where PostgreSQL runs (CI) the same test runs on it instead,
        # and tests/test_sweep.py covers many writers on one sqlite file.
        pytest.skip("sqlite backend: the PostgreSQL variant runs (SEGLAB_TEST_POSTGRES_URI set)")
    backend = f"sqlite:///{tmp_path}/server.db" if request.param == "sqlite" else empty_postgres()
    with mlflow_serving(backend, tmp_path) as uri:
        yield uri


@pytest.mark.slow
def test_submitit_jobs_log_over_http_and_lose_nothing(tmp_path, mlflow_server):
    _, client, (parent,), children = run_sweep(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=15",
        "loss=ce,dice",
        tracking_uri=mlflow_server,
    )
    # submitit started each job as a process of its own, with its own log folder.
    jobs = [p for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.name.isdigit()]
    assert len(jobs) == 2 and all(any(j.glob("*_log.out")) for j in jobs)
    assert not (tmp_path / "mlflow.db").exists()  # everything went to the server
    assert sorted(c.info.run_name for c in children) == ["ce", "dice"]
    assert parent.info.status == "FINISHED"
    assert "sweep_summary.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert_children_complete(client, parent, children)
