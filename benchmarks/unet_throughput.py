"""U-Net training images/s for 64/128/256 px x base filters 8/16/32 (depth 3), and how much of
this CPU's measured matmul peak the convolutions reach; plus the train-step options seglab
exposes (``trainer.jit_compile``, ``trainer.steps_per_execution``) at the demo's size.

Throughput is of ``model.fit`` on one in-memory batch repeated (no input pipeline), median of
``--repeats`` timed epochs after a warm-up epoch. Achieved FLOP/s counts 3x the forward
convolution FLOPs per trained image (forward + the two backward products).
"""

from __future__ import annotations

import argparse

import common
import keras
import numpy as np

from seglab.training.model import build_unet

SIZES = (64, 128, 256)
FILTERS = (8, 16, 32)
BATCH = 8
CLASSES = 5


def images_per_second(
    size: int,
    filters: int,
    repeats: int,
    seconds: float,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
) -> tuple[float, keras.Model]:
    keras.utils.set_random_seed(0)
    model = build_unet((size, size, 3), CLASSES, depth=3, base_filters=filters)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, size, size, 3), np.float32)
    y = rng.integers(0, CLASSES, (BATCH, size, size)).astype(np.int32)
    return common.train_rate(model, (x, y), repeats, seconds), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per timed epoch, roughly")
    args = parser.parse_args()
    peak = common.matmul_peak()
    rows = []
    for size in SIZES:
        for filters in FILTERS:
            rate, model = images_per_second(size, filters, args.repeats, args.seconds)
            flops = common.forward_flops(model)
            achieved = 3 * flops * rate
            rows.append(
                {
                    "size": size,
                    "base_filters": filters,
                    "train_images_per_second": rate,
                    "forward_gflop_per_image": flops / 1e9,
                    "achieved_gflops": achieved / 1e9,
                    "utilisation_of_matmul_peak": achieved / peak,
                }
            )
            print(rows[-1], flush=True)
    options = {}
    for name, kwargs in {
        "default": {},
        "jit_compile": {"jit_compile": True},
        "steps_per_execution_8": {"steps_per_execution": 8},
    }.items():
        options[name] = images_per_second(64, 8, args.repeats, args.seconds, **kwargs)[0]
        print(name, options[name], flush=True)
    table = [
        "| px | base filters | train img/s | fwd GFLOP/img | achieved GFLOP/s | of peak |",
        "|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['size']} | {r['base_filters']} | {r['train_images_per_second']:.1f} | "
            f"{r['forward_gflop_per_image']:.3f} | {r['achieved_gflops']:.1f} | "
            f"{r['utilisation_of_matmul_peak']:.0%} |"
            for r in rows
        ),
    ]
    common.write(
        "unet_throughput",
        {
            "batch_size": BATCH,
            "matmul_peak_gflops": peak / 1e9,
            "configs": rows,
            "train_step_options_64px_base8_images_per_second": options,
        },
        [
            f"Training throughput, batch {BATCH}, depth 3; float32 matmul peak of this CPU: "
            f"{peak / 1e9:.1f} GFLOP/s (2048x2048, best of 10).",
            "",
            *table,
            "",
            "Train-step options at 64 px, base 8 (img/s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in options.items()),
        ],
    )


if __name__ == "__main__":
    main()
