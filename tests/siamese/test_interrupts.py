"""A Ctrl-C that lands in a finalizer is dropped by Python ("Exception ignored"); inside
`interrupts_remembered` it is raised again at the next safe point."""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest

from siamese import DataConfig, TrainConfig, fit, prepare_data
from siamese.interrupts import InterruptCheck, interrupts_remembered, raise_if_interrupted


class SignalledWhileCollected:
    """Its finalizer is where SIGINT lands: Python drops the KeyboardInterrupt raised there."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs before kill returns


def _drop_a_ctrl_c() -> None:
    holder = SignalledWhileCollected()
    del holder
    gc.collect()


# Python reports the dropped exception through sys.unraisablehook, which pytest turns into
# this warning: the drop the module is about.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_a_ctrl_c_dropped_in_a_finalizer_is_raised_at_the_next_safe_point() -> None:
    with interrupts_remembered():
        _drop_a_ctrl_c()
        dropped = True  # reached: the KeyboardInterrupt raised in the finalizer went nowhere
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    assert dropped
    raise_if_interrupted()  # outside, and after: forgotten


def test_a_training_stops_at_the_end_of_the_epoch_it_was_dropped_in() -> None:
    config = TrainConfig(epochs=3, data=DataConfig(train_pairs=64, val_pairs=64), device="cpu")

    class DropAtEpochOne(InterruptCheck):
        def on_epoch_end(self, record, history):  # type: ignore[no-untyped-def]
            if record.epoch == 1:
                _drop_a_ctrl_c()
            return super().on_epoch_end(record, history)

    with interrupts_remembered(), pytest.raises(KeyboardInterrupt):
        fit(config, prepare_data(config.data), callbacks=[DropAtEpochOne()])


class TerminatedWhileCollected:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_dropped_in_a_finalizer_is_raised_at_the_next_safe_point() -> None:
    """tracking turns SIGTERM into an interruption (a scheduler's stop): dropped in a
    finalizer, it too stops the search at its next safe point."""
    from tracking.run import sigterm_as_interrupt

    with interrupts_remembered(), sigterm_as_interrupt():
        _drop_terminated_in_a_finalizer()
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()


def test_a_sigterm_is_forgotten_when_its_scope_ends_outside_a_remembering_one() -> None:
    """A library caller that caught the interruption and trains again is not stopped by the
    old signal; inside a search (a remembering scope open) it stays for the safe points."""
    from tracking.run import Terminated, sigterm_as_interrupt

    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    _not_interrupted()  # nothing remembered

    with interrupts_remembered():
        with pytest.raises(Terminated), sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()  # the search's next safe point still stops it
    _not_interrupted()  # the remembering scope forgot it as it ended


def test_a_sigterm_dropped_in_a_finalizer_outside_a_search_stays_remembered() -> None:
    """Dropped, it never reached the caller: the next safe point must still stop."""
    from tracking.run import sigterm_as_interrupt

    with sigterm_as_interrupt():
        _drop_terminated_in_a_finalizer()
    with pytest.raises(KeyboardInterrupt):
        raise_if_interrupted()


def _drop_terminated_in_a_finalizer() -> None:
    """A SIGTERM whose interruption a finalizer swallows (Python only warns of it)."""
    holder = TerminatedWhileCollected()
    del holder
    gc.collect()


def _not_interrupted() -> None:
    try:
        raise_if_interrupted()
    except KeyboardInterrupt:  # not let through: it would stop the whole test session
        pytest.fail("a signal stayed remembered after its scope ended")
