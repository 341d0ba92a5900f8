"""``seglab <command> [key=value ...]``: every seglab command, one style.

Each command takes Hydra-style words: ``key=value`` options and ``group=option`` choices
(``seglab train loss=dice``), ``--help`` for a short help, ``--cfg job`` for the whole composed
config. ``python -m seglab.<command>`` runs the same. Bad input ends a command with exit status 2
and one line naming the option or file, the bad value and the valid choices.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from seglab.paths import config_dir, register_resolvers

COMMANDS = {
    "train": "train a U-Net and log the loss beside every class's IoU to MLflow (-m: a sweep)",
    "evaluate": "score a run's logged model on a split of its own data or of any data",
    "predict": "segment a folder of images with a run's logged model",
    "report": "the report of a sweep (or an experiment), read back from MLflow",
    "compare": "two runs class by class: the paired bootstrap over images and the verdict",
    "stats": "each class's pixel share and image count, on every split of the data",
}
USAGE = "usage: seglab <command> [key=value ...]   (seglab <command> --help)\n\ncommands:\n" + (
    "\n".join(f"  {name:<9} {text}" for name, text in COMMANDS.items())
)


BAD_INPUT = 2  # the exit status of a command refused for bad input


def bad_input(command: str, error: ValueError) -> int:
    """Prints ``<command>: <message>`` on stderr and returns :data:`BAD_INPUT`: seglab raises
    ``ValueError`` for bad options, files and values, with a message that names them, and a
    traceback would bury it. ``SEGLAB_VERBOSE=1`` raises it instead, traceback and all (a
    ``ValueError`` from TensorFlow's own code needs it)."""
    if os.environ.get("SEGLAB_VERBOSE"):
        raise error
    print(f"{command}: {error}", file=sys.stderr)
    return BAD_INPUT


@contextmanager
def bad_input_in_one_line(command: str) -> Iterator[None]:
    """Ends the process with :func:`bad_input`'s one line and exit status on a ``ValueError``."""
    try:
        yield
    except ValueError as error:
        # SystemExit is not an Exception: Hydra passes it through instead of printing its own
        # "Error executing job" traceback.
        raise SystemExit(bad_input(command, error)) from None


def compose_options(config_name: str, words: Sequence[str]) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``key=value`` ``words`` applied, for the commands that
    make no Hydra job (evaluate, report): an unknown key or a word that is no ``key=value`` is
    refused naming it and the options there are."""
    known = list(OmegaConf.load(config_dir() / f"{config_name}.yaml"))
    for word in words:
        key, sep, _ = word.partition("=")
        if not sep:
            raise ValueError(f"{word!r} is not key=value; the options are {known}")
        if key.lstrip("+~") not in known:
            raise ValueError(f"{key!r} is not an option; the options are {known}")
    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name, overrides=list(words))
    except HydraException as error:
        reason = str(error).strip().splitlines()[0]
        raise ValueError(f"cannot read the options {list(words)}: {reason}") from None


def options_help(config_name: str, text: str) -> str:
    """A command's help: ``text``, then each option of ``conf/<config_name>.yaml`` with its
    default and comment."""
    lines = (config_dir() / f"{config_name}.yaml").read_text().splitlines()
    options = [line for line in lines if line and not line.startswith(("#", " "))]
    return text.strip() + "\n\noptions (key=value):\n" + "\n".join(f"  {o}" for o in options)


def flags(words: Sequence[str]) -> tuple[list[str], bool, bool]:
    """``(words without the flags, --help given, --cfg given)``; ``--cfg`` may be followed by
    Hydra's ``job`` (the only part these commands have)."""
    rest, show_help, show_config = [], False, False
    previous = ""
    for word in words:
        if word in ("-h", "--help"):
            show_help = True
        elif word in ("-c", "--cfg"):
            show_config = True
        elif not (word == "job" and previous in ("-c", "--cfg")):
            rest.append(word)
        previous = word
    return rest, show_help, show_config


def print_config(config: DictConfig) -> None:
    """``--cfg``: the composed config as YAML."""
    print(OmegaConf.to_yaml(config), end="")


def read_options(
    config_name: str,
    help_text: str,
    argv: Sequence[str] | None,
    as_options: Callable[[Sequence[str]], list[str]] = list,
) -> DictConfig | None:
    """A command's options: ``conf/<config_name>.yaml`` composed with its words (``argv``, else
    ``sys.argv[1:]``), which ``as_options`` turns into ``key=value`` words. ``None`` when
    ``--help`` or ``--cfg`` printed what they print (the command then ends with status 0).
    Raises ``ValueError`` on a bad option."""
    words, show_help, show_config = flags(sys.argv[1:] if argv is None else argv)
    if show_help:
        print(options_help(config_name, help_text))
        return None
    cfg = compose_options(config_name, as_options(words))
    if show_config:
        print_config(cfg)
        return None
    return cfg


def main(argv: Sequence[str] | None = None) -> None:
    """The ``seglab`` console script: runs ``seglab.<command>`` with the words that follow."""
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] in ("-h", "--help", "help"):
        print(USAGE)
        raise SystemExit(0 if words else 2)
    command, *rest = words
    if command not in COMMANDS:
        print(f"seglab: {command!r} is not a command; one of {list(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(f"seglab.{command}")
    sys.argv = [f"seglab {command}", *rest]
    module.cli()
