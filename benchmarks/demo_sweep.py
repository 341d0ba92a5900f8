"""Wall time of the ``make demo`` sweep (goal: <= 5 minutes on 2 CPU cores).

Runs exactly what ``make demo`` runs (``seglab train experiment=demo``) in a fresh
process, with outputs and the MLflow store in a temporary folder, and records the wall time of
the whole command and the sweep's own ``[sweep] N jobs in S s`` line.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "seglab.train",
                "experiment=demo",
                f"paths.output_dir={tmp}",
                f"hydra.sweep.dir={tmp}/sweep",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"the demo sweep failed:\n{result.stderr[-3000:]}")
    sweep = re.search(r"\[sweep\] (\d+) jobs in (\d+)s", result.stdout)
    starts = [float(s) for s in re.findall(r"started at \+(\d+)s", result.stdout)]
    common.write(
        "demo_sweep",
        {
            "command": "seglab train experiment=demo",
            "wall_seconds": wall,
            "sweep_seconds": float(sweep.group(2)) if sweep else None,
            "jobs": int(sweep.group(1)) if sweep else None,
            "job_start_offsets_seconds": starts,
            "goal_seconds": 300,
        },
        [
            f"`make demo` sweep (seglab train experiment=demo): {wall:.0f} s wall "
            f"({wall / 60:.1f} min, goal <= 5 min); "
            + (f"{sweep.group(1)} jobs in {sweep.group(2)} s " if sweep else "")
            + "from the sweep's start to its report.",
        ],
    )


if __name__ == "__main__":
    main()
