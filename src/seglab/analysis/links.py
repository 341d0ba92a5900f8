"""Links into the MLflow UI, for whoever reads runs back: an experiment's training runs, one
run's page, and runs' metrics charted against the epoch, on the UI that serves the store.

A tracking server serves its own UI, at its address. A local (sqlite) store is served by
``make ui``, on ``127.0.0.1`` and the port ``SEGLAB_UI_PORT`` names (``make ui PORT=...`` and
``make demo PORT=...`` set it; 5000 otherwise), so the links a run prints open where the UI runs.
Every link asks for MLflow 3's model-training views (``workflowType=machine_learning``): without
it the UI files seglab's runs under its GenAI "Evaluations".
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

UI_PORT = "SEGLAB_UI_PORT"  # the environment variable naming the local UI's port
DEFAULT_PORT = "5000"  # mlflow ui's own default
TRAINING_VIEWS = "workflowType=machine_learning"


def ui_address(tracking_uri: str) -> str:
    """The address of the MLflow UI that serves ``tracking_uri``: a server's own address, else
    ``http://127.0.0.1:<SEGLAB_UI_PORT or 5000>``. Raises naming the variable when its value
    is no port."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    port = os.environ.get(UI_PORT, DEFAULT_PORT)
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{UI_PORT}={port!r} is no port: give a number from 1 to 65535")
    return f"http://127.0.0.1:{port}"


def as_json(values: Sequence[str]) -> str:
    """A JSON list for a UI query parameter, percent-encoded as the UI encodes it."""
    return quote(json.dumps(list(values), separators=(",", ":")), safe="")


@dataclass(frozen=True)
class UiLinks:
    """The MLflow UI's pages at ``address`` (see :func:`ui_address`)."""

    address: str

    def experiment(self, experiment_id: str) -> str:
        """The experiment's training runs."""
        return f"{self.address}/#/experiments/{experiment_id}/runs?{TRAINING_VIEWS}"

    def run(self, experiment_id: str, run_id: str) -> str:
        """One run's page: its description, parameters, metrics and artifacts."""
        return f"{self.address}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEWS}"

    def metrics(
        self, experiment_ids: Sequence[str], run_ids: Sequence[str], keys: Sequence[str]
    ) -> str:
        """``keys`` of ``run_ids`` on one chart against the epoch (the UI's metric page; its
        default x-axis is wall time, not the step)."""
        query = "&".join(  # the page's other parameters have defaults
            [
                f"runs={as_json(run_ids)}",
                f"metric={quote(json.dumps(keys[0]), safe='')}",
                f"experiments={as_json(sorted(set(experiment_ids)))}",
                f"plot_metric_keys={as_json(keys)}",
                "x_axis=step",
                "show_point=true",
            ]
        )
        return f"{self.address}/#/metric/?{query}"
