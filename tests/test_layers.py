"""The package's layers: what each may import, and that reading runs back loads no TensorFlow."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import seglab

PACKAGE = Path(seglab.__file__).parent
# Each layer and the seglab layers it may import (besides itself): the data's path, bottom up.
HELPERS = {"schema", "paths", "silence", "signals", "config", "cli"}
ALLOWED = {
    "core": {"schema"},
    "figures": {"core", "schema"},
    "losses": {"silence"},
    "data": {"core", "silence", "schema"},
    "training": {"core", "data", "losses", "silence", "schema", "signals"},
    "analysis": {"core", "figures", "schema"},
    "tracking": {
        "core",
        "data",
        "losses",
        "training",
        "figures",
        "analysis",
        "schema",
        "paths",
        "signals",
        "config",
    },
    "search": {"core", "schema", "tracking", "analysis", "config"},
}


def seglab_imports(path: Path) -> set[str]:
    """The first part below ``seglab`` of every seglab module a file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "seglab" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer):
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules, layer
    wrong = {
        f"{path.relative_to(PACKAGE)} imports seglab.{name}"
        for path in modules
        for name in seglab_imports(path) - ALLOWED[layer] - {layer}
        if (PACKAGE / name).is_dir() or name in HELPERS
    }
    assert wrong == set()


def test_reading_runs_back_loads_no_tensorflow():
    code = (
        "import sys; import seglab.core.statistics, seglab.core.per_image, seglab.core.verdicts, "
        "seglab.core.class_weights, seglab.analysis.report, seglab.figures.gallery, seglab.schema; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
