"""A search space in config: what each trial samples, as Hydra overrides.

``hydra.sweeper.space`` maps a config key or group to one kind of parameter::

    loss: {choices: [ce, focal, dice]}            # categorical (a group's options, or values)
    loss.gamma: {float: [0.5, 5.0], when: {loss: focal}}   # only in the trials that pick focal
    class_weights.power: {float: [0.0, 1.0]}
    trainer.optimizer.lr: {float: [1.0e-4, 1.0e-2], log: true}   # log-uniform
    model.base_filters: {int: [8, 32], step: 8}

Parameters are sampled in the order written, so a ``when`` names parameters written before it.
:meth:`SearchSpace.sample` works on any object with Optuna's ``suggest_*`` methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

KINDS = ("choices", "int", "float")
OPTIONS = (*KINDS, "log", "step", "when")
WHERE = "hydra.sweeper.space"


class Suggests(Protocol):
    """What a sample needs of an Optuna trial."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(
        self, name: str, low: int, high: int, step: int = 1, log: bool = False
    ) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


@dataclass(frozen=True)
class Parameter:
    """One searched key.

    Attributes:
        key: The config key or group (``loss.gamma``, ``loss``), as an override writes it.
        kind: ``choices``, ``int`` or ``float``.
        choices: A categorical parameter's values.
        low: The lower bound of a number (inclusive).
        high: The upper bound of a number (inclusive).
        log: Sampled uniformly in log space.
        step: A number's grid step (``None``: continuous, or 1 for ``int``).
        when: Sampled only when these earlier parameters took these values.
    """

    key: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    when: Mapping[str, Any] = field(default_factory=dict)

    def sample(self, trial: Suggests) -> Any:
        """This parameter's value in ``trial``."""
        if self.kind == "choices":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def applies(self, sampled: Mapping[str, Any]) -> bool:
        """Whether the trial that sampled ``sampled`` takes this parameter."""
        return all(sampled.get(key) == value for key, value in self.when.items())

    def example(self) -> Any:
        """A value in range: what an override of this key is checked with before a search."""
        return self.choices[0] if self.kind == "choices" else self.low


def parameter(key: str, spec: Any, earlier: Mapping[str, Parameter]) -> Parameter:
    """One entry of the space, checked; raises one line naming the entry and the choices."""
    where = f"{WHERE}.{key}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}={spec!r} must be a mapping with one of {list(KINDS)}")
    if unknown := sorted(set(spec) - set(OPTIONS)):
        raise ValueError(f"{where}: unknown option(s) {unknown}; the options are {list(OPTIONS)}")
    kinds = [kind for kind in KINDS if kind in spec]
    if len(kinds) != 1:
        raise ValueError(f"{where}: give exactly one of {list(KINDS)}, got {kinds or 'none'}")
    (kind,) = kinds
    when = dict(spec.get("when") or {})
    for name, value in when.items():
        if name not in earlier or earlier[name].kind != "choices":
            raise ValueError(
                f"{where}.when: {name!r} is not a categorical parameter written before it; "
                f"those are {[k for k, p in earlier.items() if p.kind == 'choices']}"
            )
        if value not in earlier[name].choices:
            raise ValueError(
                f"{where}.when: {name}={value!r} is not one of {list(earlier[name].choices)}"
            )
    if kind == "choices":
        choices = spec["choices"]
        if isinstance(choices, str) or not isinstance(choices, list | tuple) or not choices:
            raise ValueError(f"{where}.choices={choices!r} must be a non-empty list")
        if "log" in spec or "step" in spec:
            raise ValueError(f"{where}: log and step apply to int and float, not choices")
        return Parameter(key, kind, choices=tuple(choices), when=when)
    return number(key, kind, spec, when)


def number(key: str, kind: str, spec: Mapping[str, Any], when: Mapping[str, Any]) -> Parameter:
    """An ``int`` or ``float`` entry: ``[low, high]``, ``log`` and ``step`` checked."""
    where = f"{WHERE}.{key}"
    bounds = spec[kind]
    numeric = int if kind == "int" else int | float
    if (
        isinstance(bounds, str)
        or not isinstance(bounds, list | tuple)
        or len(bounds) != 2
        or not all(isinstance(b, numeric) and not isinstance(b, bool) for b in bounds)
    ):
        raise ValueError(f"{where}.{kind}={bounds!r} must be [low, high], two {kind} numbers")
    low, high = bounds
    if low > high:
        raise ValueError(f"{where}.{kind}=[{low}, {high}]: low is above high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}.log={log!r} is not one of [true, false]")
    if log and low <= 0:
        raise ValueError(f"{where}: log: true needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, numeric) or step <= 0:
            raise ValueError(f"{where}.step={step!r} must be a positive {kind}")
        if log:
            raise ValueError(f"{where}: step and log: true cannot go together (Optuna)")
    return Parameter(key, kind, low=low, high=high, log=log, step=step, when=when)


class SearchSpace:
    """The parameters of ``hydra.sweeper.space``, checked when made.

    Args:
        space: Key (or group) -> its entry, in sampling order.

    Raises:
        ValueError: One line naming the bad entry and what it may be.
    """

    def __init__(self, space: Mapping[str, Any]) -> None:
        if not space:
            raise ValueError(
                f"{WHERE} is empty: name the keys a trial samples (search=<question> gives one)"
            )
        self.parameters: dict[str, Parameter] = {}
        for key, spec in space.items():
            self.parameters[str(key)] = parameter(str(key), spec, self.parameters)

    @property
    def keys(self) -> list[str]:
        return list(self.parameters)

    def sample(self, trial: Suggests) -> dict[str, Any]:
        """The values of one trial: every parameter whose ``when`` holds, in order."""
        sampled: dict[str, Any] = {}
        for key, param in self.parameters.items():
            if param.applies(sampled):
                sampled[key] = param.sample(trial)
        return sampled

    def probes(self) -> list[dict[str, Any]]:
        """One assignment per parameter: it, at a value in range, with the values its ``when``
        asks for; composing each checks the key exists where the parameter applies."""
        return [{**p.when, key: p.example()} for key, p in self.parameters.items()]


def overrides(values: Mapping[str, Any]) -> list[str]:
    """Hydra overrides of sampled values (``loss=focal``, ``loss.gamma=2.5``)."""
    return [f"{key}={override_value(value)}" for key, value in values.items()]


def override_value(value: Any) -> str:
    """A value as a Hydra override writes it: ``null``, ``true``, numbers as Python's shortest
    round-trip text (``0.0001``), text as is."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)
