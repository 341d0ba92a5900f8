"""The U-Net of ``seglab.training.model.build_unet`` in PyTorch, timed as a training step.

Run by ``benchmarks/pytorch_peer.py`` in an interpreter that has PyTorch (seglab's ``bench``
extra, or any other environment: this file imports only torch and numpy). The same layers as
seglab's: per level two 3x3 convolutions without bias, batch norm (momentum 0.1, Keras' 0.9)
and ReLU; 2x2 max pooling; 2x2 transposed convolutions with stride 2 and skip concatenation;
a 1x1 convolution to the classes; cross-entropy over the softmax; Adam 1e-3; channels-last.

Prints one JSON line: images per second (wall) and per CPU-second over the timed steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional


def conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (channels_in, channels_out):
        layers += [
            nn.Conv2d(c, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out, momentum=0.1),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    def __init__(self, classes: int, depth: int, base: int) -> None:
        super().__init__()
        widths = [base * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            conv_block(3 if level == 0 else widths[level - 1], widths[level])
            for level in range(depth)
        )
        self.bottom = conv_block(widths[depth - 1], widths[depth])
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
            for level in reversed(range(depth))
        )
        self.merge = nn.ModuleList(
            conv_block(2 * widths[level], widths[level]) for level in reversed(range(depth))
        )
        self.logits = nn.Conv2d(base, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.logits(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--shape", type=int, nargs=2, default=[128, 160])
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = UNet(args.classes, 4, 16).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(
        rng.random((args.batch, 3, *args.shape), dtype=np.float32)
    ).contiguous(memory_format=torch.channels_last)
    labels = torch.from_numpy(rng.integers(0, args.classes, (args.batch, *args.shape)))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bfloat16")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = model(images)
        loss = functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    seen = args.steps * args.batch
    print(json.dumps({
        "images_per_second": seen / wall, "images_per_cpu_second": seen / cpu,
        "cores_busy": cpu / wall, "torch": torch.__version__, "threads": args.threads,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
