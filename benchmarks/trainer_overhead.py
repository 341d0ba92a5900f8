"""What seglab adds to an epoch, each variant timed in this one process, interleaved.

Variants, all the same U-Net (64 px, depth 3, base 8) on the same 800-image shapes set:
  bare      model.fit with Keras' CE on the same tf.data pipeline, validation loss only
  seglab    seglab's Trainer: streaming confusion matrix, per-class loss terms, val CE
  tracked   seglab + MLflow logging of every per-class metric each epoch (sqlite store)
  augment   seglab with augment=medium on the training stream
  jit       seglab with trainer.jit_compile=true (XLA)
Ratios are of median epoch times (first epoch of every run dropped: it traces the graphs, and
under XLA compiles them; its time is reported apart). The tracked variant also times the MLflow
call itself, a far less noisy measure of tracking's cost than the difference of two epochs.
On this shared machine whole epochs vary by more than the goals, so two steadier measures
back the epoch ratios: seglab/bare rebuilt from single compiled steps of both variants timed
in alternation (plus each variant's time outside the steps), and augmentation's share of an
epoch's CPU time, measured on the pipeline alone.
Goals: seglab/bare >= 0.95 throughput, tracking <= 2 % overhead, augment >= 0.9x.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import common
import keras
import psutil

from seglab.data.augment import Augmenter
from seglab.data.datasets.shapes import shapes
from seglab.data.pipeline import batches
from seglab.losses import CrossEntropy
from seglab.tracking.run_log import epoch_metrics
from seglab.tracking.tracker import MlflowTracker
from seglab.training.model import build_unet
from seglab.training.trainer import Trainer

BATCH = 16


def new_model(data):
    keras.utils.set_random_seed(0)
    return build_unet(data.image_shape, data.num_classes, depth=3, base_filters=8)


def bare_streams(data, augment=None):
    """The training and validation batches bare ``model.fit`` runs on (what seglab's trainer
    builds too, less its pixel weights)."""
    return batches(data.train, BATCH, shuffle_seed=0, augment=augment), batches(data.val, BATCH)


def new_trainer(epochs: int, jit: bool = False) -> Trainer:
    return Trainer(
        lambda: keras.optimizers.Adam(3e-3), epochs=epochs, batch_size=BATCH, jit_compile=jit
    )


def compile_bare(model: keras.Model) -> None:
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy())


def bare(data, epochs: int) -> common.EpochTimer:
    model = new_model(data)
    compile_bare(model)
    timer = common.EpochTimer()
    train, val = bare_streams(data)
    model.fit(
        train,
        validation_data=val,
        epochs=epochs,
        shuffle=False,
        callbacks=[timer],
        verbose=0,
    )
    return timer


def seglab(
    data, epochs: int, tracker=None, augment=None, rss=None, log_seconds=None, jit=False
) -> common.EpochTimer:
    timer = common.EpochTimer()

    def on_epoch(record):
        if tracker is not None:
            start = time.perf_counter()
            tracker.log_metrics(epoch_metrics(record, data.class_names), step=record.epoch)
            if log_seconds is not None:
                log_seconds.append(time.perf_counter() - start)
        if rss is not None:
            rss.append(psutil.Process().memory_info().rss / 2**20)

    new_trainer(epochs, jit).fit(
        new_model(data),
        CrossEntropy(255),
        data,
        augment=augment,
        on_epoch=on_epoch,
        callbacks=[timer],
    )
    return timer


def paired_steps(data, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Single compiled train and test steps of bare and seglab, alternated
    (:func:`common.paired_steps`); both models are traced by a short fit first."""
    bare_model = new_model(data)
    compile_bare(bare_model)
    bare_train, bare_val = bare_streams(data)
    bare_model.fit(bare_train.take(2), validation_data=bare_val.take(2), shuffle=False, verbose=0)
    trainer = new_trainer(epochs=1)
    seglab_model = new_model(data)
    trainer.fit(seglab_model, CrossEntropy(255), data)  # its test step counts into the metrics
    seglab_train, seglab_val = trainer.streams(data)
    return common.paired_steps(
        {
            "bare": (bare_model, bare_train, bare_val),
            "seglab": (seglab_model, seglab_train, seglab_val),
        },
        rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="per run, the first is dropped")
    parser.add_argument("--rss-epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=200, help="of paired single steps")
    args = parser.parse_args()
    data = shapes()
    with tempfile.TemporaryDirectory() as tmp:
        tracker = MlflowTracker("bench", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        log_seconds: list[float] = []
        variants = {
            "bare": lambda: bare(data, args.epochs),
            "seglab": lambda: seglab(data, args.epochs),
            "tracked": lambda: seglab(data, args.epochs, tracker, log_seconds=log_seconds),
            "augment": lambda: seglab(data, args.epochs, augment=Augmenter(0.5)),
            "jit": lambda: seglab(data, args.epochs, jit=True),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        first: dict[str, list[float]] = {name: [] for name in variants}
        outside: dict[str, list[float]] = {name: [] for name in variants}
        with tracker.start_run():
            # Memory first, in a fresh process: after the other variants (XLA's among them) the
            # allocator's state would blur a leak's slope.
            rss: list[float] = []
            start = time.perf_counter()
            seglab(data, args.rss_epochs, tracker=tracker, rss=rss)
            rss_seconds = time.perf_counter() - start
            for _ in range(args.repeats):
                for name, run in variants.items():  # interleaved: drift hits every variant
                    timer = run()
                    first[name].append(timer.seconds[0])
                    times[name] += timer.seconds[1:]
                    cpu[name] += timer.cpu_seconds[1:]
                    outside[name] += timer.outside_steps()[1:]
    steps = paired_steps(data, args.rounds)
    pipeline_cpu = {
        level: common.iterate_seconds(bare_streams(data, augment)[0], args.repeats)[1]
        for level, augment in (("none", None), ("medium", Augmenter(0.5)))
    }
    epoch = {name: common.median(values) for name, values in times.items()}
    images = data.num_train
    epoch_cpu = {name: common.median(values) for name, values in cpu.items()}
    first_epoch = {name: common.median(values) for name, values in first.items()}
    log_call = common.median(log_seconds)
    ratios = {
        "seglab_vs_bare_throughput": epoch["bare"] / epoch["seglab"],
        "tracking_overhead": epoch["tracked"] / epoch["seglab"] - 1,
        "tracking_call_share_of_epoch": log_call / epoch["seglab"],
        "augment_medium_vs_none_throughput": epoch["seglab"] / epoch["augment"],
        "jit_vs_default_throughput": epoch["seglab"] / epoch["jit"],
    }
    # Epoch time rebuilt from its parts: the paired single-step medians times the steps of an
    # epoch, plus each variant's median time outside the compiled steps.
    step = {phase: {k: common.median(v) for k, v in t.items()} for phase, t in steps.items()}
    step_ratio = common.step_ratios(steps, "bare", "seglab")
    outside_median = {name: common.median(values) for name, values in outside.items()}
    rebuilt = {
        name: data.num_train / BATCH * step["train"][name]
        + data.num_val / BATCH * step["test"][name]
        + outside_median[name]
        for name in ("bare", "seglab")
    }
    ratios["seglab_vs_bare_throughput_from_paired_steps"] = rebuilt["bare"] / rebuilt["seglab"]
    # On 2 busy cores every CPU second the augmenting pipeline spends is taken from the model:
    # the throughput ratio cannot fall below 1 / (1 + its share of an epoch's CPU time).
    augment_share = (pipeline_cpu["medium"] - pipeline_cpu["none"]) / epoch_cpu["seglab"]
    ratios["augment_throughput_lower_bound_from_pipeline_cpu"] = 1 / (1 + augment_share)
    cpu_ratios = {  # the same ratios from CPU time: less noise from other tenants
        "seglab_vs_bare_throughput": epoch_cpu["bare"] / epoch_cpu["seglab"],
        "tracking_overhead": epoch_cpu["tracked"] / epoch_cpu["seglab"] - 1,
        "augment_medium_vs_none_throughput": epoch_cpu["seglab"] / epoch_cpu["augment"],
        "jit_vs_default_throughput": epoch_cpu["seglab"] / epoch_cpu["jit"],
    }
    common.write(
        "trainer_overhead",
        {
            "epoch_seconds_median": epoch,
            "epoch_seconds_all": times,
            "epoch_cpu_seconds_median": epoch_cpu,
            "epoch_cpu_seconds_all": cpu,
            "ratios_from_cpu_time": cpu_ratios,
            "first_epoch_seconds_median": first_epoch,
            "outside_steps_seconds_median": outside_median,
            "paired_step_seconds": steps,
            "paired_step_seconds_median": step,
            "paired_step_ratio_bare_over_seglab_median": step_ratio,
            "epoch_seconds_rebuilt_from_steps": rebuilt,
            "pipeline_cpu_seconds_per_epoch": pipeline_cpu,
            "tracking_call_seconds": log_seconds,
            "train_images_per_second": {k: images / v for k, v in epoch.items()},
            "ratios": ratios,
            "goals": {
                "seglab_vs_bare_throughput": ">= 0.95",
                "tracking_overhead": "<= 0.02",
                "augment_medium_vs_none_throughput": ">= 0.9",
            },
            "rss_mib_per_epoch": rss,
            "rss_growth_mib_epoch2_to_last": float(rss[-1] - rss[1]),
            "rss_run_seconds": rss_seconds,
        },
        [
            f"Median epoch (800 train + 200 val images, 64 px, {args.repeats} repeats x "
            f"{args.epochs - 1} timed epochs): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in epoch.items()),
            "Median CPU seconds per epoch (all threads): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in epoch_cpu.items()),
            "Ratios from wall time (from CPU time in brackets):",
            f"- seglab vs bare model.fit throughput: {ratios['seglab_vs_bare_throughput']:.3f}"
            f" [{cpu_ratios['seglab_vs_bare_throughput']:.3f}] (goal >= 0.95)",
            f"- seglab vs bare, rebuilt from {args.rounds} paired single steps: "
            f"{ratios['seglab_vs_bare_throughput_from_paired_steps']:.3f} (train step bare/seglab "
            f"{step_ratio['train']:.3f}, test step {step_ratio['test']:.3f}; outside the steps "
            f"bare {outside_median['bare']:.2f} s, seglab {outside_median['seglab']:.2f} s)",
            f"- MLflow tracking overhead: {ratios['tracking_overhead']:+.1%} "
            f"[{cpu_ratios['tracking_overhead']:+.1%}] of epoch time; the MLflow call itself "
            f"takes {log_call * 1000:.0f} ms per epoch, "
            f"{ratios['tracking_call_share_of_epoch']:.2%} of an epoch (goal <= 2 %)",
            f"- jit_compile=true vs false throughput: {ratios['jit_vs_default_throughput']:.3f} "
            f"[{cpu_ratios['jit_vs_default_throughput']:.3f}]; "
            f"first epoch (tracing, XLA compile) {first_epoch['jit']:.1f} s vs "
            f"{first_epoch['seglab']:.1f} s",
            f"- augment=medium vs none throughput: "
            f"{ratios['augment_medium_vs_none_throughput']:.3f} "
            f"[{cpu_ratios['augment_medium_vs_none_throughput']:.3f}] (goal >= 0.9); the "
            f"augmenting pipeline costs {augment_share:.1%} of an epoch's CPU time, so at worst "
            f"{ratios['augment_throughput_lower_bound_from_pipeline_cpu']:.3f}",
            f"- RSS over {args.rss_epochs} tracked epochs: {rss[0]:.0f} -> {rss[-1]:.0f} MiB "
            f"(epoch 2 to last: {rss[-1] - rss[1]:+.0f} MiB)",
        ],
    )


if __name__ == "__main__":
    main()
