"""Wall time of the ``make demo`` sweep (goal: <= 5 minutes on 2 CPU cores), and how to spend
the cores on a sweep of small models: one job after another with every core (Hydra's basic
launcher, ``trainer.threads=auto``), or two jobs at once with one thread each (the joblib
launcher, ``hydra.launcher.n_jobs=2 trainer.threads=1``).

Each variant runs exactly ``seglab train experiment=demo`` (plus its launcher options) in a
fresh process, with outputs and the MLflow store in a temporary folder, alternating over rounds;
recorded: the wall time of the whole command and the sweep's own ``[sweep] N jobs in S s``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

import common

VARIANTS = {
    "sequential_all_cores": [],
    "joblib_2x1_thread": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.threads=1"],
}


def sweep_seconds(options: list[str]) -> dict[str, float]:
    """The demo sweep with ``options``: its wall seconds and the sweep's own."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable, "-m", "seglab.train", "experiment=demo", *options,
                f"paths.output_dir={tmp}", f"hydra.sweep.dir={tmp}/sweep",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"the demo sweep {options} failed:\n{result.stderr[-3000:]}")
    sweep = re.search(r"\[sweep\] (\d+) jobs in (\d+)s", result.stdout)
    return {"wall": wall, "sweep": float(sweep.group(2)) if sweep else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs = common.interleaved(VARIANTS, args.rounds, lambda _, options, __: sweep_seconds(options))
    wall = {name: common.median([r["wall"] for r in runs[name]]) for name in runs}
    faster = min(wall, key=wall.get)
    common.write(
        "demo_sweep",
        {
            "command": "seglab train experiment=demo",
            "variants": {name: " ".join(options) for name, options in VARIANTS.items()},
            "runs": runs,
            "faster": faster,
            "joblib_over_sequential_wall": wall["joblib_2x1_thread"] / wall["sequential_all_cores"],
            "goal_seconds": 300,
        },
        [
            f"`make demo` sweep (seglab train experiment=demo), {args.rounds} interleaved rounds, "
            "medians of the whole command's wall time (goal <= 5 min):",
            *(
                f"- {name} ({' '.join(VARIANTS[name]) or 'the default'}): {wall[name]:.0f} s "
                f"({wall[name] / 60:.1f} min)"
                for name in VARIANTS
            ),
            f"- faster: {faster}",
        ],
    )


if __name__ == "__main__":
    main()
