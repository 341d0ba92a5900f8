"""``seglab predict run_id=<id> input=<folder> output=<folder>``: segment a folder.

Loads the run's MLflow model (``runs:/<id>/model``, the best checkpoint that
:func:`seglab.tracking.models.log_model` logged) from the same store training used,
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
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
from omegaconf import DictConfig

from seglab.cli import bad_input_in_one_line
from seglab.config import check_overrides, check_required
from seglab.core.formatting import percent
from seglab.data.decode import IMAGE_SUFFIXES, encode_png
from seglab.paths import config_dir
from seglab.tracking.models import load_run_model
from seglab.training.prediction import segment_files

if TYPE_CHECKING:
    import keras


def image_files(folder: str) -> list[Path]:
    """The folder's images, sorted; raises naming ``input`` when there are none."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(f"input={folder!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"input={folder!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


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
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    counts = np.zeros(num_classes, np.int64)
    for index, (file, image, mask) in enumerate(segment_files(model, files, batch_size)):
        if index == 0:  # made once the first batch is read: a bad input leaves no empty folders
            for folder in ("masks", "overlays"):
                (out / folder).mkdir(parents=True, exist_ok=True)
        mask_path, overlay_path = targets[file]
        write_new(mask_path, encode_png(mask[..., None].astype(dtype)))
        write_new(overlay_path, encode_png(overlay(image, mask, colors, overlay_alpha)))
        counts += np.bincount(mask.ravel(), minlength=num_classes)
    return files, counts


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    with bad_input_in_one_line("seglab predict"):
        check_required(cfg)
        tracker = hydra.utils.instantiate(cfg.tracking)
        model, metadata = load_run_model(tracker, str(cfg.run_id))
        files, counts = predict_folder(
            model, metadata, cfg.input, cfg.output, cfg.batch_size, cfg.overlay_alpha
        )
    names = metadata.get("class_names") or [str(c) for c in range(len(counts))]
    shares = ", ".join(
        f"{n} {percent(c / counts.sum())}" for n, c in zip(names, counts, strict=True)
    )
    print(f"masks and overlays of {len(files)} images in {cfg.output}")
    print(f"predicted pixel shares: {shares}")


def cli() -> None:
    """``seglab predict``: unknown group options named in one line before Hydra composes."""
    with bad_input_in_one_line("seglab predict"):
        check_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
