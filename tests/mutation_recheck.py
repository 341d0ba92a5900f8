"""Re-checks the mutants ``mutmut run`` left alive against their module's whole test files.

mutmut runs each mutant against the tests that called the mutated function while it collected
its statistics. A call made while a module-scoped fixture was built is credited to the first
test that used the fixture only, so the other tests that read the fixture's result (most of
``test_report.py``) never meet the mutant. This script runs every survivor, timeout and
untested mutant again, with the whole test files of its module (:data:`TEST_FILES`; not the
slow browser tests), stopping at the first failure (in worker processes that run a chunk of
mutants each, and whose results count only if the files still pass without a mutant
afterwards), and prints the final counts per module, the kill rate and the mutants that still
survive (also written to ``outputs/mutation.json``). Outcomes are cached in
``outputs/mutation_recheck_cache.json`` while the mutant's module and its test files are
unchanged, so a stopped re-check resumes.

Usage, after ``mutmut run`` (``make mutate`` runs both): ``python tests/mutation_recheck.py``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).parent / "mutmut"
# Module (or package) prefix -> the test files that exercise it, in the order the modules are
# re-checked: the quick ones, then those whose functions the report's module-scoped fixture
# calls (where mutmut misses most), then the rest.
TEST_FILES = {
    "seglab.schema": ["tests/test_schema.py", "tests/test_tracking.py"],
    "seglab.core.class_weights": ["tests/test_class_weights.py"],
    "seglab.core.verdicts": ["tests/test_verdicts.py"],
    "seglab.core.checks": ["tests/test_folder.py", "tests/test_configs.py"],
    "seglab.core.records": ["tests/test_metrics.py"],
    "seglab.report": ["tests/test_report.py"],
    "seglab.analysis.report": ["tests/test_report.py"],
    "seglab.core.formatting": ["tests/test_statistics.py", "tests/test_report.py"],
    "seglab.core.statistics": ["tests/test_statistics.py", "tests/test_report.py"],
    "seglab.core.per_image": ["tests/test_evaluation.py", "tests/test_report.py"],
    "seglab.analysis": ["tests/test_analysis.py", "tests/test_report.py"],
    "seglab.core.scores": ["tests/test_metrics.py", "tests/test_evaluation.py"],
    "seglab.training.keras_metrics": ["tests/test_metrics.py", "tests/test_evaluation.py"],
    "seglab.losses": ["tests/test_losses.py", "tests/test_metrics.py"],
    "seglab.training.checkpoints": ["tests/test_checkpoints.py"],
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


def fingerprint(mutant: str) -> str:
    """What a re-check's outcome depends on: the mutant's name, its module as mutmut wrote it
    and the test files (a cached outcome is reused only while all three are unchanged)."""
    module = module_of(mutant).replace(".", "/")
    source = ROOT / "mutants" / "src" / f"{module}.py"
    if not source.is_file():
        source = ROOT / "mutants" / "src" / module / "__init__.py"
    digest = hashlib.sha1(source.read_bytes())
    for name in test_files(mutant):
        digest.update((ROOT / "mutants" / name).read_bytes())
    return f"{mutant}:{digest.hexdigest()}"


def worker(files: list[str], mutants: list[str]) -> int:
    """Runs in ``mutants/``: ``files`` once per mutant in this one process, printing
    ``RESULT <mutant> <killed|survived>`` lines; then ``RESULT - clean`` if the files still pass
    without a mutant (``contaminated`` otherwise: the parent then discards these results).

    One process saves the imports (seconds per mutant); mutmut's trampolines read
    ``MUTANT_UNDER_TEST`` at every call, and each ``pytest.main`` builds its fixtures anew.
    """
    import pytest

    # Not the slow tests: in these files they drive a real browser over the HTML report,
    # seconds each, and the golden HTML file already compares that page whole.
    arguments = ["-x", "-q", "-m", "not slow", "-p", "no:cacheprovider", "--timeout=300", *files]

    def passes(mutant: str) -> bool:
        os.environ["MUTANT_UNDER_TEST"] = mutant  # "" switches every mutant off
        return pytest.main(arguments) == 0

    if not passes(""):
        print("RESULT - failing", flush=True)
        return 1
    for mutant in mutants:
        print(f"RESULT {mutant} {'survived' if passes(mutant) else 'killed'}", flush=True)
    print(f"RESULT - {'clean' if passes('') else 'contaminated'}", flush=True)
    return 0


def run_worker(files: list[str], mutants: list[str], found: Callable[[str, str], None]) -> bool:
    """One :func:`worker` over ``mutants``; ``found(mutant, state)`` as results arrive. True
    when the worker ended clean (its results stand)."""
    env = {**os.environ, "PYTHONPATH": "src"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", *files, "--", *mutants]
    results: dict[str, str] = {}
    end = None
    with subprocess.Popen(
        command, cwd=ROOT / "mutants", env=env, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("RESULT "):
                _, mutant, state = line.split()
                if mutant == "-":
                    end = state
                else:
                    results[mutant] = state
    if end != "clean":
        print(f"worker over {files} ended {end}: its {len(results)} results are discarded")
        return False
    for mutant, state in results.items():
        found(mutant, state)
    return True


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        split = argv.index("--")
        return worker(argv[1:split], argv[split + 1 :])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunk", type=int, default=20, help="mutants per worker process")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds after which no more workers are started; the mutants left stay as "
        "mutmut left them and are listed as not re-checked",
    )
    args = parser.parse_args(argv)
    status = mutmut_results()
    if not status:
        print("no mutmut results: run `mutmut run` first", file=sys.stderr)
        return 2
    again = sorted(name for name, state in status.items() if state in RECHECKED)
    cache_file = ROOT / "outputs" / "mutation_recheck_cache.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    keys = {mutant: fingerprint(mutant) for mutant in again}
    todo: dict[tuple[str, ...], list[str]] = collections.defaultdict(list)
    for files in dict.fromkeys(tuple(files) for files in TEST_FILES.values()):
        todo[files] = []  # in TEST_FILES' order
    for mutant in again:
        if keys[mutant] not in cache:
            todo[tuple(test_files(mutant))].append(mutant)
    chunks = [
        (list(files), mutants[i : i + args.chunk])
        for files, mutants in todo.items()
        for i in range(0, len(mutants), args.chunk)
    ]
    print(
        f"re-checking {len(again)} of {len(status)} mutants with whole test files "
        f"({len(again) - sum(map(len, todo.values()))} cached, {len(chunks)} workers to run)",
        flush=True,
    )
    deadline = None if args.budget is None else time.monotonic() + args.budget
    lock = threading.Lock()

    def found(mutant: str, state: str) -> None:
        with lock:  # saved as it goes: a stopped re-check resumes where it stopped
            cache[keys[mutant]] = state
            cache_file.parent.mkdir(exist_ok=True)
            cache_file.write_text(json.dumps(cache, indent=0))

    def run(chunk: tuple[list[str], list[str]]) -> None:
        if deadline is None or time.monotonic() < deadline:
            run_worker(*chunk, found)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, chunks))
    unchecked = [mutant for mutant in again if keys[mutant] not in cache]
    status.update({mutant: cache[keys[mutant]] for mutant in again if keys[mutant] in cache})
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
    (ROOT / "outputs" / "mutation.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
