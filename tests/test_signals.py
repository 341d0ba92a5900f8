"""Ctrl-C/SIGTERM handling: a first signal never lands inside a deferred block (an MLflow write)."""

import os
import signal

import pytest

from seglab import signals
from seglab.tracking import RetryingClient

SIG = signal.SIGUSR1  # pytest's own Ctrl-C handling stays untouched


@pytest.fixture(autouse=True)
def installed(monkeypatch):
    previous = signal.getsignal(SIG)
    monkeypatch.setattr(signals, "_received", None)
    monkeypatch.setattr(signals, "_depth", 0)
    signals.install(SIG)
    yield
    signal.signal(SIG, previous)


def send() -> None:
    os.kill(os.getpid(), SIG)  # Python runs the handler before the next bytecode of this thread


def test_a_signal_outside_any_deferred_block_interrupts_at_once():
    steps = []
    with pytest.raises(KeyboardInterrupt, match=f"signal {int(SIG)}"):
        send()
        steps.append("after")
    assert steps == []


def test_a_signal_inside_a_deferred_block_lands_when_the_outermost_block_exits():
    steps = []
    with pytest.raises(KeyboardInterrupt, match=f"signal {int(SIG)}"), signals.deferred():
        with signals.deferred():
            send()
            steps.append("inner finished")
        steps.append("outer finished")
    assert steps == ["inner finished", "outer finished"]
    assert signals.received() == SIG


def test_a_second_signal_interrupts_a_deferred_block_at_once():
    steps = []
    with pytest.raises(KeyboardInterrupt), signals.deferred():
        send()
        steps.append("first ignored")
        send()
        steps.append("second ignored")
    assert steps == ["first ignored"]


def test_an_acknowledged_signal_lets_the_run_end_in_deferred_writes():
    with pytest.raises(KeyboardInterrupt), signals.deferred():
        send()
    signals.acknowledge()
    with signals.deferred():
        pass  # would raise again without the acknowledgement
    assert signals.received() is None


def test_a_block_that_raises_keeps_its_own_exception():
    with pytest.raises(ValueError, match="own"), signals.deferred():
        send()
        raise ValueError("own")


class Store:
    """Stands in for MlflowClient: a write that a signal arrives in the middle of."""

    def __init__(self) -> None:
        self.rows: list[str] = []

    def log_batch(self, row: str) -> None:
        send()
        self.rows.append(row)  # the commit after the signal arrived


def test_an_mlflow_call_finishes_its_write_before_the_signal_lands():
    store = Store()
    with pytest.raises(KeyboardInterrupt):
        RetryingClient(store).log_batch("epoch 3")
    assert store.rows == ["epoch 3"]
