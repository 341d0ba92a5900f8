"""The PyTorch peer: seglab's trainer against the same U-Net in PyTorch, float32 and bfloat16.

The U-Net of the CamVid experiment (128x160, depth 4, 16 base filters, batch 8, 11 classes,
Adam 1e-3) on random images held in memory. seglab: its trainer (``Trainer.fit``, seglab's
cross-entropy, per-class metrics, 8 validation images), in ``trainer.precision=float32`` and
``auto`` (what ``auto`` picks here is printed), the second epoch of 30 steps timed.
PyTorch: ``benchmarks/peers/torch_unet.py``, the same layers, float32 and
``autocast(bfloat16)``, channels-last, 30 steps timed after 3. Every variant in a fresh process,
the four alternating over rounds; images per second (wall) and per CPU-second, and the ratios.

PyTorch runs in ``--torch-python`` (default: this interpreter; ``pip install -e .[bench]``
installs it). Goals on this CPU: seglab ``auto`` >= 1.0x PyTorch bfloat16, seglab float32
>= 0.95x PyTorch float32.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

STEPS, BATCH, SHAPE, CLASSES = 30, 8, (128, 160, 3), 11
PEER = Path(__file__).parent / "peers" / "torch_unet.py"


def seglab_worker(precision: str) -> None:
    """Prints the JSON line of one seglab variant (run in a fresh process)."""
    import common
    import keras

    from seglab.losses import CrossEntropy
    from seglab.training.model import build_unet
    from seglab.training.trainer import Trainer

    trainer = Trainer(lambda: keras.optimizers.Adam(1e-3), 2, BATCH, precision=precision)
    trainer.prepare()
    data = common.random_segmentation_data(STEPS * BATCH, BATCH, SHAPE, CLASSES)
    with trainer.building():
        model = build_unet(SHAPE, CLASSES, depth=4, base_filters=16)
    timer = common.EpochTimer()
    trainer.fit(model, CrossEntropy(255), data, callbacks=[timer])
    wall, cpu, seen = timer.seconds[-1], timer.cpu_seconds[-1], STEPS * BATCH
    print(json.dumps({
        "images_per_second": seen / wall, "images_per_cpu_second": seen / cpu,
        "cores_busy": cpu / wall, "precision": trainer.precision.name,
        "threads": trainer.threads,
    }))  # fmt: skip


def measured(command: list[str]) -> dict[str, float]:
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=["float32", "auto"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        seglab_worker(args.worker)
        return
    import common

    if subprocess.run([args.torch_python, "-c", "import torch"], capture_output=True).returncode:
        print(
            f"pytorch_peer: no PyTorch in {args.torch_python}; install the bench extra "
            "(pip install -e .[bench]) or pass --torch-python <a python with torch>: not measured"
        )
        return
    variants = {
        "seglab_float32": [sys.executable, __file__, "--worker", "float32"],
        "seglab_auto": [sys.executable, __file__, "--worker", "auto"],
        "pytorch_float32": [args.torch_python, str(PEER), "--precision", "float32"],
        "pytorch_bfloat16": [args.torch_python, str(PEER), "--precision", "bfloat16"],
    }
    runs = common.interleaved(variants, args.rounds, lambda _, command, __: measured(command))
    rate = {n: common.median([r["images_per_second"] for r in runs[n]]) for n in runs}
    per_cpu = {n: common.median([r["images_per_cpu_second"] for r in runs[n]]) for n in runs}
    ratios = {
        "seglab_auto_over_pytorch_bfloat16": rate["seglab_auto"] / rate["pytorch_bfloat16"],
        "seglab_float32_over_pytorch_float32": rate["seglab_float32"] / rate["pytorch_float32"],
    }
    auto = runs["seglab_auto"][0]["precision"]
    common.write(
        "pytorch_peer",
        {
            "settings": {"shape": list(SHAPE), "classes": CLASSES, "batch": BATCH, "steps": STEPS},
            "torch": runs["pytorch_float32"][0]["torch"],
            "seglab_auto_is": auto,
            "runs": runs,
            "ratios": ratios,
            "goals": {
                "seglab_auto_over_pytorch_bfloat16": ">= 1.0",
                "seglab_float32_over_pytorch_float32": ">= 0.95",
            },
        },
        [
            f"U-Net depth 4 base 16 at {SHAPE[0]}x{SHAPE[1]}, batch {BATCH}, {CLASSES} classes, "
            f"random images in memory, a fresh process per variant, {args.rounds} interleaved "
            f"rounds (medians; seglab `auto` is {auto} here; PyTorch "
            f"{runs['pytorch_float32'][0]['torch']}):",
            *(f"- {n}: {rate[n]:.1f} images/s, {per_cpu[n]:.1f} per CPU-second" for n in variants),
            f"- seglab auto / PyTorch bfloat16: {ratios['seglab_auto_over_pytorch_bfloat16']:.2f}"
            " (goal >= 1.0)",
            "- seglab float32 / PyTorch float32: "
            f"{ratios['seglab_float32_over_pytorch_float32']:.2f} (goal >= 0.95)",
        ],
    )


if __name__ == "__main__":
    main()
