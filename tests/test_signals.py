"""Ctrl-C/SIGTERM handling: a first signal never lands inside a deferred block (an MLflow write)."""

import os
import signal

import pytest

from seglab import signals
from seglab.tracking.store import RetryingClient

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


PREEMPT = signal.SIGUSR2


@pytest.fixture
def scheduler(monkeypatch):
    """A scheduler's preemption handler on SIGUSR2 (submitit's checkpoint-and-requeue)."""
    calls = []
    previous = signal.getsignal(PREEMPT)
    monkeypatch.setattr(signals, "_schedulers", {})
    signal.signal(PREEMPT, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(PREEMPT, previous)


def test_a_preemption_ends_the_block_first_then_hands_over_to_the_scheduler(scheduler):
    signals.install_preemption(PREEMPT)
    steps = []
    preempted = pytest.raises(signals.Preempted, match=r"\(SIGUSR2: preemption")
    with preempted as caught, signals.deferred():
        os.kill(os.getpid(), PREEMPT)
        steps.append("write finished")
    assert steps == ["write finished"]
    assert scheduler == []  # not yet: the run ends first
    signals.hand_over(caught.value)
    assert scheduler == [PREEMPT]
    assert signals.received() is None


def test_without_a_scheduler_the_preemption_signal_is_left_alone(monkeypatch):
    previous = signal.getsignal(PREEMPT)
    monkeypatch.setattr(signals, "_schedulers", {})
    signal.signal(PREEMPT, signal.SIG_DFL)
    try:
        signals.install_preemption(PREEMPT)
        assert signal.getsignal(PREEMPT) is signal.SIG_DFL
    finally:
        signal.signal(PREEMPT, previous)


@pytest.mark.parametrize(
    ("setting", "expected"), [(None, signal.SIGUSR2), ("USR1", signal.SIGUSR1)]
)
def test_the_preemption_signal_is_submitits(monkeypatch, setting, expected):
    if setting is None:
        monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    else:
        monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", setting)
    assert signals.preemption_signal() == expected


def test_a_second_job_in_the_process_keeps_the_schedulers_handler(scheduler):
    signals.install_preemption(PREEMPT)
    signals.install_preemption(PREEMPT)  # seglab's own handler is not taken for the scheduler's
    with pytest.raises(signals.Preempted) as caught:
        os.kill(os.getpid(), PREEMPT)
    signals.hand_over(caught.value)
    assert scheduler == [PREEMPT]
