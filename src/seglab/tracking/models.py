"""A run's MLflow model, both ways: logged from the best checkpoint, and loaded back without
running any code from its artifacts.

The model is Keras' native ``data/model.keras`` in MLflow's TensorFlow flavour. The pickle of
Keras' registry of custom objects that the flavour adds is removed before upload, a model folder
holding a pickle is refused when loaded (loading a pickle runs code: anyone who can write a
run's artifacts could choose it), and the Keras model loads in safe mode, seglab's losses and
metrics by their registered names.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.exceptions import MlflowException

from seglab import schema
from seglab.tracking.store import TrackingStore, check_existing_store

if TYPE_CHECKING:
    import keras

    from seglab.tracking.tracker import MlflowTracker

MODEL_REQUIREMENTS = ("seglab", "tensorflow", "keras")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib", ".dill")
KERAS_FILE = Path("data") / "model.keras"  # where the TensorFlow flavour keeps a Keras 3 model


def pickle_files(folder: str | Path) -> list[Path]:
    """Files under ``folder`` whose loading would unpickle (run code), by suffix."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)


def log_model(
    tracker: MlflowTracker,
    model: keras.Model,
    example: np.ndarray,
    epoch: int,
    metadata: Mapping[str, Any],
) -> str:
    """Logs ``model`` as the open run's MLflow model ``model``; returns its URI,
    ``runs:/<run id>/model``.

    The model carries a tensor signature of ``example`` (one input image, also saved as the
    input example) and of the model's output, ``metadata`` (class names, colours: what
    :mod:`seglab.predict` needs) and is linked to the run's metrics at step ``epoch``.
    """
    import mlflow.tensorflow  # imported here: the flavour pulls in much of MLflow's models
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model, infer_signature

    client, run_id = tracker.client, tracker.run_id
    logged = client.create_logged_model(
        tracker.experiment_id(), name=schema.MODEL_NAME, source_run_id=run_id
    )
    # The output's shape and dtype are the model's own: no prediction (and no retrace) needed.
    (output,) = model.outputs
    signature = infer_signature(example, np.zeros((1, *output.shape[1:]), output.dtype))
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / schema.MODEL_NAME
        mlflow.tensorflow.save_model(
            model,
            str(local),
            signature=signature,
            input_example=example,
            pip_requirements=[f"{package}=={version(package)}" for package in MODEL_REQUIREMENTS],
            metadata=dict(metadata),
            mlflow_model=Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            ),
        )
        for pickled in pickle_files(local):
            pickled.unlink()
        client.log_model_artifacts(logged.model_id, str(local))
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=epoch)])
    client.finalize_logged_model(logged.model_id, "READY")
    return f"runs:/{run_id}/{schema.MODEL_NAME}"


def load_run_model(store: TrackingStore, run_id: str) -> tuple[keras.Model, dict]:
    """The run's logged model and its metadata; raises naming ``run_id`` when there is none."""
    import mlflow.artifacts
    from mlflow.models import Model

    check_existing_store(store.uri, store.uri_source)
    try:
        run = store.client.get_run(run_id)
    except MlflowException as error:
        raise ValueError(
            f"run_id={run_id!r}: no such run at {store.uri} (from {store.uri_source})"
        ) from error
    outputs = run.outputs.model_outputs if run.outputs else []
    models = [store.client.get_logged_model(o.model_id) for o in outputs]
    models = [m for m in models if m.name == schema.MODEL_NAME]
    if not models:
        why = run.data.tags.get(schema.TAG_MODEL_ERROR) or (
            "it was trained with tracking.log_model=false, or did not finish"
        )
        raise ValueError(f"run_id={run_id!r} has no logged model {schema.MODEL_NAME!r}: {why}")
    # The model's own artifact location: MLflow 3.x resolves runs:/<id>/model against the
    # global tracking URI only, which may not be this store.
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=models[-1].artifact_location, tracking_uri=store.uri
    )
    return load_model_folder(Path(local), run_id), Model.load(local).metadata or {}


def load_model_folder(folder: Path, run_id: str) -> keras.Model:
    """The Keras model of a downloaded MLflow model folder, loaded without running its code.

    Raises:
        ValueError: When the folder holds a pickle (anyone who can write the run's artifacts
            could make loading it run code), or no ``data/model.keras``.
    """
    import keras

    # seglab's losses, metrics and layers, registered with Keras: the model's config names them
    # (seglab>CEDice, ...), and safe-mode loading finds classes by those names only.
    import seglab.losses
    import seglab.training.encoders
    import seglab.training.keras_metrics
    import seglab.training.normalization  # noqa: F401

    if pickled := pickle_files(folder):
        raise ValueError(
            f"run_id={run_id!r}: refusing to load its model: {pickled[0].relative_to(folder)} "
            "is a pickle, and loading a pickle runs code. seglab logs models without pickles; "
            "this model was logged otherwise or its artifacts were changed"
        )
    path = folder / KERAS_FILE
    if not path.is_file():
        raise ValueError(f"run_id={run_id!r}: its model has no {KERAS_FILE} (not a Keras 3 model)")
    with zipfile.ZipFile(path) as archive:  # a KerasHub encoder: its layers register on import
        uses_kerashub = b"keras_hub" in archive.read("config.json")
    if uses_kerashub:
        try:
            import keras_hub  # noqa: F401
        except ImportError:
            raise ValueError(
                f"run_id={run_id!r}: its model has a KerasHub encoder; pip install -e "
                "'.[kerashub]' to load it"
            ) from None
    return keras.saving.load_model(path, safe_mode=True)
