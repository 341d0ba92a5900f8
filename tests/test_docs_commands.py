"""Every command the README, the docs and the experiment write-ups show still works as written:
its options exist and its overrides compose (a renamed option would otherwise leave the docs
telling users to type something that fails)."""

import re
import shlex
from pathlib import Path

import pytest
from conftest import compose_train
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from seglab import compare, evaluate, report
from seglab.cli import compose_options, flags
from seglab.paths import config_dir, project_root

ROOT = project_root()
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "experiments").rglob("*.md")]
)
# A command runs to the end of its line (a trailing backslash continues it), a closing
# backtick, a table cell's bar or a shell comment.
COMMAND = re.compile(
    r"(?:^|`)[ $]*(?:\.venv/bin/)?(?:python -m seglab\.|seglab )"
    r"(train|evaluate|predict|report|compare|stats)\b(?!:)([^`|#\n]*)",
    re.MULTILINE,
)
MAKE_STATS = re.compile(r"make (stats) ARGS=\"([^\"]*)\"")
# ``make <target>`` at the start of a code line or of an inline code span
MAKE = re.compile(r"(?:^|`)\s*make ([a-z][a-z-]*)", re.MULTILINE)
PLACEHOLDER = re.compile(r"<[^<>]*>")


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """``(where, module, arguments)`` of every ``seglab <command>`` (or ``python -m
    seglab.<command>``) in the pages."""
    found = []
    for page in PAGES:
        text = re.sub(r"\\\n\s*", " ", page.read_text())  # join continued lines
        for match in [*COMMAND.finditer(text), *MAKE_STATS.finditer(text)]:
            line = text.count("\n", 0, match.start()) + 1
            unspaced = PLACEHOLDER.sub(lambda m: m.group().replace(" ", "_"), match.group(2))
            words = usage_free(shlex.split(unspaced))
            if not words and match.group(1) in ("evaluate", "predict", "compare"):
                continue  # the command's name in a sentence: `seglab evaluate` scores...
            where = f"{page.relative_to(ROOT)}:{line}"
            found.append((where, match.group(1), words))
    return found


def usage_free(words: list[str]) -> list[str]:
    """The words of a command as a user would type them: usage notation (``[key=value ...]``,
    ``experiment=<name>``) dropped, a placeholder value (``run_id=<id>``) filled in."""
    groups = {p.name for p in config_dir().iterdir() if p.is_dir()}
    kept = []
    for word in words:
        key, _, value = word.partition("=")
        if word.startswith("[") or (word.endswith("]") and "[" not in word):
            continue  # an optional part of a usage line
        if key in groups and PLACEHOLDER.fullmatch(value):
            continue  # a config group's option left to the reader
        kept.append(PLACEHOLDER.sub("x", word))
    return kept


COMMANDS = documented_commands()


def test_the_pages_show_commands_of_every_entry_point():
    assert {module for _, module, _ in COMMANDS} == {
        "train",
        "evaluate",
        "predict",
        "report",
        "compare",
        "stats",
    }
    assert len(COMMANDS) >= 40


def overrides_one_value_each(words: list[str]) -> list[list[str]]:
    """A sweep's overrides as single runs: each swept value once, the others at their first."""
    words = [w for w in words if w not in ("-m", "--multirun", "--cfg", "job", "--help")]
    parsed = OverridesParser.create().parse_overrides(words)
    firsts = [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else w
        for o, w in zip(parsed, words, strict=True)
    ]
    runs = [firsts]
    for i, override in enumerate(parsed):
        if override.is_sweep_override():
            key = override.get_key_element()
            for value in override.sweep_string_iterator():
                runs.append([*firsts[:i], f"{key}={value}", *firsts[i + 1 :]])
    return runs


@pytest.mark.parametrize(("where", "module", "words"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_command_composes(where, module, words):
    if module in ("train", "stats"):
        for overrides in overrides_one_value_each(words):
            cfg = compose_train(*overrides, hydra_config=True)
            assert cfg.trainer.epochs >= 1, where
    elif module == "predict":
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("predict", overrides=words)
        assert {"run_id", "input", "output"} <= set(cfg), where
    elif module == "report":
        words, _, _ = flags(words)
        compose_options("report", report.options(words))
    elif module == "compare":
        words, _, _ = flags(words)
        assert compose_options("compare", compare.options(words)).b, where
    else:
        words, _, _ = flags(words)
        own, data = evaluate.split_words(words)
        assert compose_options("evaluate", own).run_id, where
        if any(o.startswith("data=") for o in data):
            compose_train(*data)


def test_every_documented_make_target_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    documented = {
        (page.relative_to(ROOT).as_posix(), target)
        for page in PAGES
        for target in MAKE.findall(page.read_text())
    }
    assert len(documented) >= 10
    assert {(page, t) for page, t in documented if t not in targets} == set()


def test_every_documented_script_exists():
    scripts = {
        script
        for page in PAGES
        for script in re.findall(r"python ((?:[\w-]+/)+[\w-]+\.py)", page.read_text())
    }
    assert len(scripts) >= 3
    assert {s for s in scripts if not (ROOT / s).is_file()} == set()


def test_the_data_flow_diagram_names_what_the_code_has():
    """Every ``module.name`` the diagram shows resolves in seglab: a renamed or moved function
    fails here instead of leaving the diagram out of date."""
    import importlib

    import seglab

    text = (ROOT / "docs" / "guide" / "data-flow.md").read_text()
    package = Path(seglab.__file__).parent
    modules = {p.stem for p in package.iterdir() if p.suffix in ("", ".py")}
    names = set(re.findall(r"\b(?:seglab\.)?([a-z_]+(?:\.[A-Za-z_]+)+)", text))
    files = ("csv", "json", "parquet", "png", "yaml")  # sweep.json is a file, not an attribute
    dotted = sorted(
        n for n in names if n.split(".")[0] in modules and n.split(".")[-1] not in files
    )
    assert len(dotted) >= 25
    for name in dotted:
        parts = name.split(".")
        # The longest prefix that is a module, then attributes of it.
        cut = max(i for i in range(1, len(parts) + 1) if is_module(".".join(parts[:i])))
        target = importlib.import_module(f"seglab.{'.'.join(parts[:cut])}")
        for attribute in parts[cut:]:
            assert hasattr(target, attribute), f"data-flow.md names seglab.{name}"
            target = getattr(target, attribute)


def is_module(name: str) -> bool:
    """Whether ``seglab.<name>`` is a module or package."""
    import importlib.util

    try:
        return importlib.util.find_spec(f"seglab.{name}") is not None
    except ModuleNotFoundError:
        return False


def listed_modules(page: Path) -> set[str]:
    """The module names a page's ``src/seglab/`` layout entry lists (annotations in parentheses
    dropped)."""
    block = re.search(r"^src/seglab/ +(.*?)\n(?=\S)", page.read_text(), re.MULTILINE | re.DOTALL)
    assert block, page
    text = re.sub(r"\([^)]*\)", "", " ".join(block.group(1).split()))
    for words in ("the package, in layers:", "the package:", "the commands", "helpers", "..."):
        text = text.replace(words, "")
    text = re.sub(r"\band\b", ",", text)
    return {name.strip() for name in re.split(r"[,;]", text) if name.strip()}


def test_the_layout_lists_the_modules_there_are():
    package = ROOT / "src" / "seglab"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert listed_modules(ROOT / "README.md") == modules
    assert listed_modules(ROOT / "docs" / "index.md") <= modules


def test_every_module_has_an_api_reference():
    import seglab

    package = Path(seglab.__file__).parent
    modules = {
        "seglab." + ".".join(p.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
        for p in package.rglob("*.py")
        if p.name != "__main__.py"
    } - {"seglab.__init__"}
    pages = " ".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    documented = set(re.findall(r"^::: (seglab[\w.]*)$", pages, re.MULTILINE))
    assert modules - documented == set()
    assert documented - modules == set()
