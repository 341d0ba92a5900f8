"""Re-checks the mutants ``mutmut run`` left alive against their module's whole test files.

mutmut runs each mutant against the tests that called the mutated function while it collected
its statistics. A call made while a module-scoped fixture was built is credited to the first
test that used the fixture only, so the other tests that read the fixture's result (most of
``test_report.py``) never meet the mutant. This script runs every survivor, timeout and
untested mutant again, with the whole test files of its module (:data:`TEST_FILES`), stopping
at the first failure, and prints the final counts per module, the kill rate and the mutants
that still survive (also written to ``outputs/mutation.json``).

Usage, after ``mutmut run`` (``make mutate`` runs both): ``python tests/mutation_recheck.py``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).parent / "mutmut"
# Module (or package) prefix -> the test files that exercise it, first the quickest to fail.
TEST_FILES = {
    "seglab.metrics": ["tests/test_metrics.py", "tests/test_evaluation.py"],
    "seglab.class_weights": ["tests/test_class_weights.py"],
    "seglab.losses": ["tests/test_losses.py", "tests/test_metrics.py"],
    "seglab.statistics": ["tests/test_statistics.py", "tests/test_report.py"],
    "seglab.analysis": ["tests/test_analysis.py", "tests/test_report.py"],
    "seglab.report": ["tests/test_report.py"],
    "seglab.checkpoints": ["tests/test_checkpoints.py"],
    "seglab.verdicts": ["tests/test_verdicts.py"],
    "seglab.evaluation": ["tests/test_evaluation.py", "tests/test_report.py"],
}
RECHECKED = ("survived", "timeout", "no tests")


def module_of(mutant: str) -> str:
    """``seglab.losses.region.xǁDiceǁ__init____mutmut_4`` -> ``seglab.losses.region``."""
    return mutant.split(".x_")[0].split(".xǁ")[0]


def test_files(mutant: str) -> list[str]:
    module = module_of(mutant)
    for prefix, files in TEST_FILES.items():
        if module == prefix or module.startswith(prefix + "."):
            return files
    raise KeyError(f"no test files for {module} ({mutant}); add it to TEST_FILES")


def mutmut_results() -> dict[str, str]:
    """Every mutant's status as ``mutmut results --all true`` prints it."""
    out = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    pairs = (line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)
    return {name: status for name, status in pairs}


def run_mutant(mutant: str, timeout: float) -> str:
    """``killed``, ``survived`` or ``timeout``: the mutant's module tests in ``mutants/``,
    where mutmut's copy of ``src`` switches the mutant on by ``MUTANT_UNDER_TEST``."""
    env = {**os.environ, "PYTHONPATH": "src", "MUTANT_UNDER_TEST": mutant}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(
            [*command, *test_files(mutant)],
            cwd=ROOT / "mutants",
            env=env,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if done.returncode == 0 else "killed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds after which no more mutants are started; the rest stay as mutmut left "
        "them and are listed as not re-checked",
    )
    args = parser.parse_args()
    status = mutmut_results()
    if not status:
        print("no mutmut results: run `mutmut run` first", file=sys.stderr)
        return 2
    again = sorted(name for name, state in status.items() if state in RECHECKED)
    print(f"re-checking {len(again)} of {len(status)} mutants with whole test files", flush=True)
    deadline = None if args.budget is None else time.monotonic() + args.budget

    def recheck(mutant: str) -> str | None:
        if deadline is not None and time.monotonic() > deadline:
            return None
        return run_mutant(mutant, args.timeout)

    with ThreadPoolExecutor(args.jobs) as pool:
        states = list(pool.map(recheck, again))
    unchecked = [name for name, state in zip(again, states, strict=True) if state is None]
    status.update({n: s for n, s in zip(again, states, strict=True) if s is not None})
    per_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, state in status.items():
        per_module[module_of(name)][state] += 1
    total = collections.Counter(status.values())
    for module, counts in sorted(per_module.items()):
        print(f"{module:28s} {dict(sorted(counts.items()))}")
    rate = total["killed"] / sum(total.values())
    print(f"all: {dict(sorted(total.items()))}, killed {rate:.1%}")
    survivors = sorted(name for name, state in status.items() if state == "survived")
    print("still surviving (mutmut show <name>):", *survivors, sep="\n  ")
    if unchecked:
        print(f"not re-checked within --budget: {len(unchecked)}", *unchecked, sep="\n  ")
    report = {
        "counts": dict(total),
        "kill_rate": rate,
        "survivors": survivors,
        "not_rechecked": unchecked,
    }
    (ROOT / "outputs").mkdir(exist_ok=True)
    (ROOT / "outputs" / "mutation.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
