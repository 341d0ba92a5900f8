"""``python -m seglab.predict run_id=<id> input=<folder> output=<folder>``: segment a folder.

Loads the run's MLflow model (``runs:/<id>/model``, the best checkpoint that
:meth:`seglab.tracking.MlflowTracker.log_model` logged) from the same store training used,
without running code from it: a model folder holding a pickle is refused, and the Keras model is
loaded in safe mode. Then it writes for every PNG/JPEG image in ``input``:

- ``<output>/masks/<name>.png``: class indices (8-bit, 16-bit past 256 classes) at the image's
  own size: the image is resized to the model's input size, and the predicted mask back
  (nearest neighbour, so labels stay labels);
- ``<output>/overlays/<name>.png``: the image with each class in its colour (the model's
  metadata: the dataset's colours, else seglab's palette).

Images are read and segmented ``batch_size`` at a time, so memory holds one batch however
large the folder. An input that cannot be read stops it with an error naming the file; the
masks of the batches before it are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra
import keras
import mlflow.artifacts
import numpy as np
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from omegaconf import DictConfig

# Imported to register seglab's losses and metrics with Keras: the model's compile config names
# them (seglab>CEDice, ...), and safe-mode loading finds classes by those names only.
from seglab import losses, metrics  # noqa: F401
from seglab.checks import check_required
from seglab.data import scale_image, tf_reason
from seglab.datasets.folder import IMAGE_SUFFIXES, read_image
from seglab.paths import config_dir
from seglab.prediction import LabelPredictor
from seglab.quiet import bad_input_in_one_line
from seglab.tracking import (
    MODEL_NAME,
    TAG_MODEL_ERROR,
    MlflowTracker,
    check_existing_store,
    pickle_files,
)

KERAS_FILE = Path("data") / "model.keras"  # where the TensorFlow flavour keeps a Keras 3 model


def load_run_model(tracker: MlflowTracker, run_id: str) -> tuple[keras.Model, dict]:
    """The run's logged model and its metadata; raises naming ``run_id`` when there is none."""
    check_existing_store(tracker.uri, tracker.uri_source)
    try:
        run = tracker.client.get_run(run_id)
    except MlflowException as error:
        raise ValueError(
            f"run_id={run_id!r}: no such run at {tracker.uri} (from {tracker.uri_source})"
        ) from error
    outputs = run.outputs.model_outputs if run.outputs else []
    models = [tracker.client.get_logged_model(o.model_id) for o in outputs]
    models = [m for m in models if m.name == MODEL_NAME]
    if not models:
        why = run.data.tags.get(TAG_MODEL_ERROR) or (
            "it was trained with tracking.log_model=false, or did not finish"
        )
        raise ValueError(f"run_id={run_id!r} has no logged model {MODEL_NAME!r}: {why}")
    # The model's own artifact location: MLflow 3.x resolves runs:/<id>/model against the
    # global tracking URI only, which may not be this store.
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=models[-1].artifact_location, tracking_uri=tracker.uri
    )
    return load_model_folder(Path(local), run_id), Model.load(local).metadata or {}


def load_model_folder(folder: Path, run_id: str) -> keras.Model:
    """The Keras model of a downloaded MLflow model folder, loaded without running its code.

    Raises:
        ValueError: When the folder holds a pickle (anyone who can write the run's artifacts
            could make loading it run code), or no ``data/model.keras``.
    """
    if pickled := pickle_files(folder):
        raise ValueError(
            f"run_id={run_id!r}: refusing to load its model: {pickled[0].relative_to(folder)} "
            "is a pickle, and loading a pickle runs code. seglab logs models without pickles; "
            "this model was logged otherwise or its artifacts were changed"
        )
    path = folder / KERAS_FILE
    if not path.is_file():
        raise ValueError(f"run_id={run_id!r}: its model has no {KERAS_FILE} (not a Keras 3 model)")
    return keras.saving.load_model(path, safe_mode=True)


def image_files(folder: str) -> list[Path]:
    """The folder's images, sorted; raises naming ``input`` when there are none."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(f"input={folder!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"input={folder!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def segment(
    model: keras.Model, files: list[Path], batch_size: int
) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    """Each file with its ``uint8 (H, W, 3)`` image and index mask at the image's size, read and
    predicted one batch at a time (memory: one batch, however many files)."""
    size = tuple(model.input_shape[1:3])
    predict = LabelPredictor(model)
    for start in range(0, len(files), batch_size):
        chunk = [(file, read_input(file)) for file in files[start : start + batch_size]]
        labels = predict(tf.stack([scale_image(image, size) for _, image in chunk])).numpy()
        for (file, image), label in zip(chunk, labels, strict=True):
            back = tf.image.resize(label[..., None], image.shape[:2], method="nearest")
            yield file, image, np.asarray(back)[..., 0]


def output_paths(files: list[Path], out: Path) -> dict[Path, tuple[Path, Path]]:
    """Each input's mask and overlay path; raises before anything is written when two inputs
    would write one file (``a.png`` and ``a.jpg``) or a target is a symlink (it would be
    written through, overwriting whatever it points to)."""
    by_stem: dict[str, Path] = {}
    for file in files:
        if file.stem in by_stem:
            raise ValueError(
                f"input has {by_stem[file.stem].name} and {file.name}: both would write "
                f"masks/{file.stem}.png; rename one"
            )
        by_stem[file.stem] = file
    targets = {
        f: (out / "masks" / f"{f.stem}.png", out / "overlays" / f"{f.stem}.png") for f in files
    }
    for path in [out / "masks", out / "overlays", *(p for pair in targets.values() for p in pair)]:
        if path.is_symlink():
            raise ValueError(f"output: refusing to write through the symlink {path}")
    return targets


def write_new(path: Path, data: bytes) -> None:
    """Writes ``path`` without following a symlink there (one made after the check fails)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def overlay(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """``uint8`` image with each pixel blended towards its class colour by ``alpha``."""
    blended = (1 - alpha) * image.astype(np.float64) + alpha * colors[mask]
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


def predict_folder(
    model: keras.Model,
    metadata: dict,
    input_dir: str,
    output_dir: str,
    batch_size: int = 8,
    overlay_alpha: float = 0.5,
) -> tuple[list[Path], np.ndarray]:
    """Writes ``masks/`` and ``overlays/`` under ``output_dir``; returns the images segmented
    and the predicted pixels of each class over all of them."""
    if not 0.0 <= overlay_alpha <= 1.0:
        raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = image_files(input_dir)
    num_classes = int(model.output_shape[-1])
    colors = np.array(metadata.get("colors") or [], dtype=np.float64)
    if colors.shape != (num_classes, 3):
        raise ValueError(
            f"the model's metadata has colours {colors.tolist()} for {num_classes} classes"
        )
    out = Path(output_dir).expanduser()
    targets = output_paths(files, out)
    dtype = tf.uint8 if num_classes <= 256 else tf.uint16
    counts = np.zeros(num_classes, np.int64)
    for index, (file, image, mask) in enumerate(segment(model, files, batch_size)):
        if index == 0:  # made once the first batch is read: a bad input leaves no empty folders
            for folder in ("masks", "overlays"):
                (out / folder).mkdir(parents=True, exist_ok=True)
        mask_path, overlay_path = targets[file]
        write_new(mask_path, tf.io.encode_png(tf.cast(mask[..., None], dtype)).numpy())
        picture = overlay(image, mask, colors, overlay_alpha)
        write_new(overlay_path, tf.io.encode_png(picture).numpy())
        counts += np.bincount(mask.ravel(), minlength=num_classes)
    return files, counts


def read_input(path: Path) -> np.ndarray:
    """One input image as ``uint8 (H, W, 3)``; raises naming the file when it cannot be read."""
    try:
        return np.asarray(read_image(str(path)))
    except tf.errors.OpError as error:
        reason = tf_reason(error.message)
        raise ValueError(f"input file {path} cannot be read as an image: {reason}") from None


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    with bad_input_in_one_line("seglab.predict"):
        check_required(cfg)
        tracker: MlflowTracker = hydra.utils.instantiate(cfg.tracking)
        model, metadata = load_run_model(tracker, str(cfg.run_id))
        files, counts = predict_folder(
            model, metadata, cfg.input, cfg.output, cfg.batch_size, cfg.overlay_alpha
        )
    names = metadata.get("class_names") or [str(c) for c in range(len(counts))]
    shares = ", ".join(f"{n} {c / counts.sum():.1%}" for n, c in zip(names, counts, strict=True))
    print(f"masks and overlays of {len(files)} images in {cfg.output}")
    print(f"predicted pixel shares: {shares}")


if __name__ == "__main__":
    main()
