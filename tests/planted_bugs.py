"""Plants one-line bugs, one at a time, in the modules mutation testing leaves out, and checks
that the tests written for them catch each.

``make mutate`` covers the modules that compute the numbers with their fast tests. The others
(data, augmentation, datasets, model, callbacks, what a run logs, the gallery, prediction) are
tested through TensorFlow and whole runs, too slow for thousands of mutants; for them this is a
list of bugs a person could plausibly write, each with the test files that must catch it. Every
bug is planted in a copy of the working tree (never in it), those files run with ``-x`` (they
must pass without a bug first, or nothing is counted), and the script prints one line per bug
and exits 1 when one survives. A bug whose original line is
no longer in its module is reported as stale: update the list with the code.

Usage: ``python tests/planted_bugs.py [number ...]`` (``make planted``; all bugs by default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(
    ".git", ".venv", "outputs", "mutants", "__pycache__", "*.egg-info"
)


@dataclass(frozen=True)
class Bug:
    """``original`` replaced by ``planted`` in ``src/seglab/<module>``; ``tests`` must fail."""

    module: str
    original: str
    planted: str
    breaks: str
    tests: tuple[str, ...]


DATA = ("tests/test_data.py", "tests/test_folder.py")
AUGMENT = ("tests/test_augment.py",)
E2E = ("tests/test_train_e2e.py",)
BUGS = [
    Bug(
        "data/counting.py",
        "image_pixels += (present * valid.sum(axis=1, keepdims=True)).sum(axis=0)",
        "image_pixels += (present * masks.shape[1]).sum(axis=0)",
        "median frequency counts ignored pixels as the class's images' pixels",
        DATA,
    ),
    Bug(
        "data/counting.py",
        "images += present.sum(axis=0)",
        "images += per_image.sum(axis=0) > 0",
        "images containing a class counted once per batch",
        DATA,
    ),
    Bug(
        "data/counting.py",
        "valid, bad = label_validity(masks, num_classes, ignore_index)",
        "valid, bad = label_validity(masks, num_classes, None)",
        "ignored pixels refused as labels outside the classes",
        DATA,
    ),
    Bug(
        "data/pipeline.py",
        "return tf.where(ignored, tf.zeros_like(weights), weights)",
        "return weights",
        "ignored pixels weighted like class 0",
        DATA,
    ),
    Bug(
        "data/pipeline.py",
        "weights = tf.math.divide_no_nan(total, num_classes * counts)",
        "weights = tf.math.divide_no_nan(total, counts)",
        "per-batch weights without the class count",
        DATA,
    ),
    Bug(
        "data/pipeline.py",
        "elif 0 < size % batch_size < min_batch:",
        "elif 0 < size % batch_size <= min_batch:",
        "a last batch of exactly one image per replica dropped",
        ("tests/test_strategy.py",),
    ),
    Bug(
        "data/pipeline.py",
        "tf.where(tf.reduce_any(tf.equal(y, boosted)), factor, 1.0)",
        "tf.where(tf.reduce_all(tf.equal(y, boosted)), factor, 1.0)",
        "image boost only for images made of the class alone",
        AUGMENT,
    ),
    Bug(
        "data/decode.py",
        'mask = tf.image.resize(mask, size, method="nearest")[..., 0]',
        'mask = tf.image.resize(mask, size, method="bilinear")[..., 0]',
        "masks resized bilinear (labels blended at edges)",
        DATA,
    ),
    Bug(
        "data/decode.py",
        "image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, size",
        "image = tf.image.resize(tf.cast(image, tf.float32) / 256.0, size",
        "images scaled by 1/256",
        DATA,
    ),
    Bug(
        "data/counting.py",
        'digest.update(f"{path}\\0{stat.st_size}\\0{stat.st_mtime_ns}\\n".encode())',
        'digest.update(f"{path}\\0{stat.st_size}\\n".encode())',
        "a mask edited in place (same size) keeps its stale class counts",
        DATA,
    ),
    Bug(
        "data/augment.py",
        "fill_value=float(self.ignore_index),",
        "fill_value=0.0,",
        "pixels from outside the image labelled background",
        AUGMENT,
    ),
    Bug(
        "data/augment.py",
        "mean = tf.reduce_mean(image, axis=(0, 1), keepdims=True)",
        "mean = tf.reduce_mean(image, axis=(0, 1, 2), keepdims=True)",
        "contrast about the grey mean instead of each channel's",
        AUGMENT,
    ),
    Bug(
        "data/augment.py",
        "a00, a01, a10, a11 = cos * sign, -sin, sin * sign, cos",
        "a00, a01, a10, a11 = cos, -sin * sign, sin, cos * sign",
        "the horizontal flip flips vertically",
        AUGMENT,
    ),
    Bug(
        "data/augment.py",
        'return bool(f["rotation"] or f["zoom"] or f["translation"] or f["flip"])',
        'return bool(f["rotation"] or f["zoom"] or f["translation"])',
        "a flip on its own never applied",
        AUGMENT,
    ),
    Bug(
        "data/augment.py",
        "tx, ty = shift[0] * width, shift[1] * height",
        "tx, ty = shift[0] * height, shift[1] * width",
        "translations scaled by the wrong side",
        AUGMENT,
    ),
    Bug(
        "data/augment.py",
        'seeds[1], 1 - f["zoom"], 1 + f["zoom"])',
        'seeds[1], 1 - f["zoom"], 1.0)',
        "zoom only ever shrinks",
        AUGMENT,
    ),
    Bug(
        "data/augment.py",
        "seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)",
        "seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=False)",
        "every epoch draws the same views",
        AUGMENT,
    ),
    Bug(
        "training/model.py",
        "x = conv_block(x, base_filters * 2**depth)",
        "x = conv_block(x, base_filters * 2 ** (depth - 1))",
        "the bottleneck does not double the filters",
        ("tests/test_model.py",),
    ),
    Bug(
        "training/model.py",
        "    if dropout:\n        x = layers.Dropout(dropout)(x)\n",
        "",
        "model.dropout ignored",
        ("tests/test_model.py",),
    ),
    Bug(
        "training/model.py",
        'layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)',
        'layers.Conv2D(filters, 3, padding="same", use_bias=True)',
        "a bias before batch norm",
        ("tests/test_model.py",),
    ),
    Bug(
        "training/callbacks.py",
        "self.record(epoch + 1, float(",
        "self.record(epoch, float(",
        "epochs (MLflow steps) counted from 0",
        ("tests/test_trainer.py",),
    ),
    Bug(
        "training/callbacks.py",
        'float(logs["loss"]), float(logs["val_loss"]), seconds)',
        'float(logs["val_loss"]), float(logs["val_loss"]), seconds)',
        "train/loss logged from the validation loss",
        ("tests/test_trainer.py",),
    ),
    Bug(
        "training/callbacks.py",
        "if loss is not None and not np.isfinite(loss):\n            raise FloatingPointError(\n"
        '                f"training',
        "if loss is not None and np.isnan(loss):\n            raise FloatingPointError(\n"
        '                f"training',
        "an infinite training loss trains on",
        ("tests/test_trainer.py",),
    ),
    Bug(
        "tracking/run_log.py",
        "metrics[schema.key(schema.VAL, score)] = float(getattr(scores, score))",
        'metrics[schema.key(schema.VAL, score)] = float(getattr(scores, "pixel_acc"))',
        "every whole-split score (val/class_acc, val/miou...) logged as pixel accuracy",
        ("tests/test_tracking.py",),
    ),
    Bug(
        "tracking/run_log.py",
        "schema.HIDDEN: [float(c in hidden) for c in range(len(class_names))],",
        "schema.HIDDEN: [0.0 for c in range(len(class_names))],",
        "val/hidden/<class> always 0",
        ("tests/test_tracking.py",),
    ),
    Bug(
        "tracking/run_log.py",
        '"train_images": counts.images,',
        '"train_images": counts.pixels,',
        "class_weights.csv's image counts are pixel counts",
        E2E,
    ),
    Bug(
        "tracking/run_log.py",
        "pd.DataFrame(final.confusion, index=",
        "pd.DataFrame(final.confusion.T, index=",
        "confusion_matrix.csv transposed",
        E2E,
    ),
    Bug(
        "tracking/run_log.py",
        'f"{tags[schema.TAG_WORST_CLASS]} (IoU {final.scores.min_iou:.3f}); "',
        'f"{tags[schema.TAG_WORST_CLASS]} (IoU {final.scores.miou:.3f}); "',
        "the run's description gives mIoU as the worst class's IoU",
        E2E,
    ),
    Bug(
        "figures/gallery.py",
        'chosen = present[np.argsort(-missed[present], kind="stable")]',
        'chosen = present[np.argsort(missed[present], kind="stable")]',
        "the gallery shows the images that miss the class least",
        ("tests/test_gallery.py",),
    ),
    Bug(
        "figures/gallery.py",
        "shown[(truth == target) & (prediction != target)] = MISSED",
        "shown[(prediction == target) & (truth != target)] = MISSED",
        "magenta marks false positives instead of missed pixels",
        ("tests/test_gallery.py",),
    ),
    Bug(
        "figures/gallery.py",
        "for target in list(classes)[:MAX_CLASSES]:",
        "for target in list(classes)[:1]:",
        "a gallery for the first failing class only",
        ("tests/test_gallery.py",),
    ),
    Bug(
        "predict.py",
        "blended = (1 - alpha) * image.astype(np.float64) + alpha * colors[mask]",
        "blended = alpha * image.astype(np.float64) + (1 - alpha) * colors[mask]",
        "overlay_alpha weighs the image instead of the colour",
        ("tests/test_predict.py",),
    ),
    Bug(
        "predict.py",
        "counts += np.bincount(mask.ravel(), minlength=num_classes)",
        "counts += np.bincount(mask.ravel(), minlength=num_classes) > 0",
        "predicted pixel shares count images",
        ("tests/test_predict.py",),
    ),
    Bug(
        "predict.py",
        "dtype = np.uint8 if num_classes <= 256 else np.uint16",
        "dtype = np.uint8",
        "masks of more than 256 classes written in 8 bits",
        ("tests/test_predict.py",),
    ),
    Bug(
        "data/datasets/folder.py",
        "n_val = max(1, round(val_fraction * len(images)))",
        "n_val = max(1, int(val_fraction * len(images)))",
        "the validation share rounded down",
        ("tests/test_folder.py",),
    ),
    Bug(
        "data/datasets/folder.py",
        "kept = sorted(set(range(len(images))) - set(held_out))",
        "kept = sorted(set(range(len(images))))",
        "validation images also trained on",
        ("tests/test_folder.py",),
    ),
    Bug(
        "data/datasets/folder.py",
        "[str(masks[s]) for s in stems]",
        "[str(masks[s]) for s in reversed(stems)]",
        "images paired with other images' masks",
        ("tests/test_folder.py",),
    ),
    Bug(
        "tracking/run_log.py",
        "test = self._score_test_split(predict, data, batch_size, best_epoch, boundary)",
        "test = self._score_test_split(predict, data, batch_size, final.epoch, boundary)",
        "test/... logged at the last epoch instead of the best checkpoint's",
        ("tests/test_camvid.py",),
    ),
    Bug(
        "tracking/run_log.py",
        '"checkpoint_epoch": epoch,',
        '"checkpoint_epoch": 0,',
        "the logged model does not know its checkpoint's epoch",
        ("tests/test_camvid.py",),
    ),
    Bug(
        "evaluate.py",
        "if not cfg.new_run and schema.key(prefix, schema.MIOU) in source.data.metrics:",
        "if False:",
        "seglab.evaluate writes over metrics the run already has",
        ("tests/test_camvid.py",),
    ),
    Bug(
        "evaluate.py",
        "    if num_classes != data.num_classes:",
        "    if False:",
        "seglab.evaluate scores data of another class count",
        ("tests/test_camvid.py",),
    ),
    Bug(
        "tracking/sweep.py",
        "elif failed or missing > 0 or report_error:",
        "elif missing > 0 or report_error:",
        "a sweep with a failed job ends FINISHED",
        ("tests/test_sweep.py",),
    ),
    Bug(
        "data/counting.py",
        'sample += f" ({undecodable_file(files[bad]) or files[bad][-1]})"',
        'sample += f" ({files[bad][-1]})"',
        "an unreadable image is named by its mask",
        DATA,
    ),
    Bug(
        "data/dataset.py",
        "if 0 <= self.ignore_index < len(self.class_names):",
        "if 0 <= self.ignore_index < len(self.class_names) - 1:",
        "an ignore index equal to the last class's label is accepted",
        DATA,
    ),
    Bug(
        "training/trainer.py",
        '**{**keywords, "learning_rate": float(rate)})',
        "**keywords)",
        "an integer learning rate reaches Keras, which refuses it",
        ("tests/test_trainer.py",),
    ),
    Bug(
        "evaluate.py",
        'PREFIX = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")',
        'PREFIX = re.compile(r"[A-Za-z0-9_./-]+")',
        "seglab.evaluate takes prefix=../x (a metric name and artifact path outside)",
        ("tests/test_camvid.py",),
    ),
    Bug(
        "tracking/store.py",
        "if not database.is_file():",
        "if not database.parent.is_dir():",
        "a read-only command creates an empty store in an existing folder",
        ("tests/test_predict.py", "tests/test_report.py"),
    ),
    Bug(
        "evaluate.py",
        "    if target not in allowed:",
        "    if target is None:",
        "seglab.evaluate calls any _target_ a run's logged config.yaml names",
        ("tests/test_camvid.py",),
    ),
    Bug(
        "tracking/resume.py",
        "        if key not in logged or key.startswith(RESUME_MAY_CHANGE):",
        '        if key not in logged or key != "trainer.seed":',
        "a run resumes with another loss, mixing two setups in one history",
        ("tests/test_reliability.py",),
    ),
    Bug(
        "config.py",
        "    if missing := sorted(OmegaConf.missing_keys(cfg)):",
        "    if missing := sorted(OmegaConf.missing_keys(cfg))[1:]:",
        "an unset option among several is not named",
        ("tests/test_configs.py",),
    ),
    Bug(
        "tracking/resume.py",
        'if run_id is not None or resume == "auto":',
        "if run_id is not None:",
        "trainer.resume=auto with nothing to resume fails instead of starting a run",
        ("tests/test_reliability.py",),
    ),
    Bug(
        "signals.py",
        "return Preempted(signum) if signum in _schedulers else KeyboardInterrupt",
        "return KeyboardInterrupt",
        "a preemption ends the run like Ctrl-C, and submitit never requeues the job",
        ("tests/test_signals.py", "tests/test_reliability.py"),
    ),
    Bug(
        "training/trainer.py",
        "if state is not None and initial_epoch >= self.epochs:",
        "if state is not None and initial_epoch > self.epochs:",
        "a run stopped after its last epoch cannot be resumed to its end",
        ("tests/test_reliability.py",),
    ),
    Bug(
        "train.py",
        "        signals.hand_over(preempted)",
        "        pass",
        "a preempted job ends its run but submitit never requeues it",
        ("tests/test_reliability.py",),
    ),
    Bug(
        "training/trainer.py",
        "            model.optimizer.build(model.trainable_variables)",
        "            pass",
        "the training step traced twice again (the optimizer built inside it)",
        ("tests/test_trainer.py",),
    ),
    Bug(
        "config.py",
        "                check_choice(group, value, group_options(group))",
        "                check_choice(group, values[0], group_options(group))",
        "a sweep over a group's options checks its first option only",
        ("tests/test_configs.py",),
    ),
]


def plant(copy: Path, bug: Bug) -> tuple[bool, str, float]:
    """Plants ``bug`` in ``copy``, runs its tests, restores the module: (caught, test, seconds)."""
    path = copy / "src" / "seglab" / bug.module
    text = path.read_text()
    path.write_text(text.replace(bug.original, bug.planted))
    start = time.perf_counter()
    try:
        passed, failed = run_tests(copy, bug.tests)
    finally:
        path.write_text(text)
    return not passed, failed, time.perf_counter() - start


def run_tests(copy: Path, files: tuple[str, ...]) -> tuple[bool, str]:
    """Runs ``files`` in ``copy`` up to the first failure: (passed, the first failed test)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files],
        cwd=copy,
        env={**os.environ, "PYTHONPATH": str(copy / "src")},
        capture_output=True,
        text=True,
        check=False,
    )
    failed = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return result.returncode == 0, failed[0].split(" - ")[0] if failed else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", type=int, help="bugs to plant (default: all)")
    args = parser.parse_args(argv)
    if unknown := [n for n in args.numbers if not 0 <= n < len(BUGS)]:
        parser.error(f"no planted bug {unknown}: the bugs are numbered 0..{len(BUGS) - 1}")
    chosen = args.numbers or range(len(BUGS))
    stale = [
        n
        for n in chosen
        if (ROOT / "src/seglab" / BUGS[n].module).read_text().count(BUGS[n].original) != 1
    ]
    for n in stale:
        print(f"{n:2d} STALE     {BUGS[n].module}: {BUGS[n].breaks} (original line not found once)")
    survived = []
    with tempfile.TemporaryDirectory(prefix="seglab-planted-") as tmp:
        copy = Path(tmp) / "seglab"
        shutil.copytree(ROOT, copy, ignore=LEFT_OUT)
        # A bug counts as caught only if its tests pass without it.
        for files in sorted({BUGS[n].tests for n in chosen if n not in stale}):
            if not run_tests(copy, files)[0]:
                print(f"the tests fail without a planted bug: {' '.join(files)}")
                return 1
        for n in chosen:
            if n in stale:
                continue
            bug = BUGS[n]
            caught, test, seconds = plant(copy, bug)
            verdict = "caught  " if caught else "SURVIVED"
            print(
                f"{n:2d} {verdict} {seconds:4.0f} s  {bug.module}: {bug.breaks}  {test}", flush=True
            )
            if not caught:
                survived.append(n)
    print(
        f"{len(chosen) - len(survived) - len(stale)} of {len(chosen)} planted bugs caught"
        + (f"; survived: {survived}" if survived else "")
        + (f"; stale: {stale}" if stale else "")
    )
    return 1 if survived or stale else 0


if __name__ == "__main__":
    sys.exit(main())
