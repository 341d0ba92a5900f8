"""The MLflow schema has one owner: every key, tag and artifact path is spelled in
:mod:`seglab.schema` alone, and its key builders are checked against literal keys."""

import ast
import re
from pathlib import Path

import pytest

import seglab
from seglab import schema

PACKAGE = Path(seglab.__file__).parent
MODULES = {p.stem for p in PACKAGE.rglob("*.py")} | {p.parent.name for p in PACKAGE.rglob("*.py")}
# A metric key (train/loss, val/iou/<class>, test/...) or a seglab tag (seglab.<word> that is
# not a module: seglab.train is the logger and the command, seglab.hidden_failure a tag).
METRIC_KEY = re.compile(r"(?<![\w/.])(train|val|test)/[a-z_]")
SEGLAB_TAG = re.compile(r"(?<![\w.])seglab\.([a-z_]+)")
# An MLflow artifact path or the sweep file: the folders, and every file name the schema has.
FILES = sorted(
    value
    for name, value in vars(schema).items()
    if name.endswith(("_FILE", "_HTML")) and isinstance(value, str)
)
ARTIFACT = re.compile(
    r"(?<![\w/])(figures|per_image|gallery)/|" + "|".join(rf"\b{re.escape(f)}" for f in FILES)
)


def literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module, f-string parts included, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def schema_literals_outside_the_schema() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "schema.py":
            continue
        for line, text in literals(path):
            tags = [t for t in SEGLAB_TAG.findall(text) if t not in MODULES]
            if METRIC_KEY.search(text) or tags or ARTIFACT.search(text):
                found.append(f"{path.relative_to(PACKAGE)}:{line}: {text!r}")
    return found


def test_no_metric_key_tag_or_artifact_path_is_spelled_outside_the_schema():
    assert schema_literals_outside_the_schema() == []


def test_the_check_finds_what_it_looks_for(tmp_path):
    assert "per_class.csv" in FILES and "sweep.json" in FILES and "report.html" in FILES
    planted = ['"val/iou/"', '"seglab.hidden_failure"', '"figures/x.png"', '"per_class.csv"']
    for text in planted:
        assert any(
            (METRIC_KEY.search(s) or SEGLAB_TAG.search(s) or ARTIFACT.search(s))
            for _, s in literals_of(tmp_path, f"x = {text}\n")
        ), text
    assert literals_of(tmp_path, '"""val/loss in a docstring."""\n') == []


def literals_of(tmp_path: Path, source: str) -> list[tuple[int, str]]:
    path = tmp_path / "module.py"
    path.write_text(source)
    return literals(path)


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (schema.per_class("val", "iou", "speck"), "val/iou/speck"),
        (schema.per_class("test", "missed", "building, edifice"), "test/missed/building_ edifice"),
        (schema.per_class("night/a", "recall", "a/b"), "night/a/recall/a_b"),
        (schema.per_class("val", "iou", "道路"), "val/iou/道路"),
        (schema.gallery_file("<img src=x>", 7), "gallery/_img src_x_/epoch_007.png"),
        (schema.per_image_file("test"), "per_image/test.parquet"),
        (schema.axis_tag("loss"), "seglab.loss"),
    ],
)
def test_keys_are_built_as_the_schema_says(built, expected):
    assert built == expected


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("val/iou/speck", ("val/iou", "speck")),
        ("val/loss", ("val/loss", "")),
        ("val/hidden_count", ("val/hidden_count", "")),
        ("test/missed/pole", ("test/missed", "pole")),
        ("night/a/recall/pole", ("night/a/recall", "pole")),
        ("val/loss_share/sky", ("val/loss_share", "sky")),
    ],
)
def test_split_key_separates_the_class(key, parts):
    assert schema.split_key(key) == parts


def test_epoch_keys_are_every_score_and_every_class_kind():
    keys = schema.epoch_metric_keys(["a", "b"])
    assert len(keys) == 3 + len(schema.EPOCH_SCORES) + 2 * len(schema.EPOCH_KINDS)
    assert {"train/loss", "val/loss", "val/ce", "val/min_iou", "val/iou/b", "val/hidden/a"} <= set(
        keys
    )
    assert schema.split_metric_keys("test", ["a"]) == [
        "test/miou",
        "test/min_iou",
        "test/pixel_acc",
        "test/class_acc",
        "test/iou/a",
        "test/recall/a",
        "test/missed/a",
    ]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", ""], r"a class name is empty"),
        (["a", "  "], r"a class name is empty"),
        (["a/b", "a_b"], r"classes 'a/b' and 'a_b' would share the metric key 'val/iou/a_b'"),
        (["a,b", "a;b"], r"classes 'a,b' and 'a;b' would share"),
    ],
)
def test_class_names_that_would_share_a_key_are_refused(names, message):
    with pytest.raises(ValueError, match=message):
        schema.class_keys(names, "data.class_names")
