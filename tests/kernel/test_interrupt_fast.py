"""The interrupt latch's own logic (kernel/interrupt.py), at its seam: a fake kernel that
counts SIGINTs. An interrupt that overtakes its run is held until the code begins; when the
code never begins (the kernel is busy with something the latch never saw start) it is sent
anyway once INTERRUPT_HOLD_SECONDS have passed."""

import time
from typing import Any, cast

import pytest

from cogbox.kernel import interrupt
from cogbox.kernel.interrupt import InterruptLatch
from cogbox.kernel.launch import KernelProcess

HOLD = 0.2


class CountingKernel:
    """The one method the latch calls on a kernel."""

    def __init__(self) -> None:
        self.interrupts = 0

    def interrupt(self) -> None:
        self.interrupts += 1


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(interrupt, "INTERRUPT_HOLD_SECONDS", HOLD)
    return CountingKernel()


def _as_kernel(fake: CountingKernel) -> KernelProcess:
    return cast(KernelProcess, fake)


def test_an_interrupt_whose_run_never_begins_is_sent_after_the_hold(kernel: Any) -> None:
    latch = InterruptLatch()
    latch.expect()  # a run is on its way; its code never begins (the kernel is busy)
    latch.request(_as_kernel(kernel))
    latch.send_overdue(_as_kernel(kernel))
    assert kernel.interrupts == 0  # held: the run may still begin
    time.sleep(HOLD + 0.05)
    latch.send_overdue(_as_kernel(kernel))
    latch.send_overdue(_as_kernel(kernel))
    assert kernel.interrupts == 1  # sent once, not again on the next poll


def test_an_overdue_interrupt_is_not_sent_again_when_the_run_begins(kernel: Any) -> None:
    latch = InterruptLatch()
    latch.expect()
    latch.request(_as_kernel(kernel))
    time.sleep(HOLD + 0.05)
    latch.send_overdue(_as_kernel(kernel))
    latch.begun(_as_kernel(kernel))
    assert kernel.interrupts == 1


def test_a_held_interrupt_is_sent_when_the_code_begins(kernel: Any) -> None:
    latch = InterruptLatch()
    latch.expect()
    latch.request(_as_kernel(kernel))
    latch.request(_as_kernel(kernel))  # a second request while held: still one SIGINT
    assert kernel.interrupts == 0
    latch.begun(_as_kernel(kernel))
    assert kernel.interrupts == 1


def test_the_hold_counts_from_the_first_request(kernel: Any) -> None:
    latch = InterruptLatch()
    latch.expect()
    latch.request(_as_kernel(kernel))
    time.sleep(HOLD * 0.75)
    latch.request(_as_kernel(kernel))  # must not restart the clock
    time.sleep(HOLD * 0.5)
    latch.send_overdue(_as_kernel(kernel))
    assert kernel.interrupts == 1


def test_an_interrupt_of_begun_code_goes_straight_through(kernel: Any) -> None:
    latch = InterruptLatch()
    latch.request(_as_kernel(kernel))  # nothing expected: code runs (or the kernel is idle)
    assert kernel.interrupts == 1


def test_the_latch_knows_whether_an_interrupt_reached_the_run(kernel: Any) -> None:
    latch = InterruptLatch()
    latch.request(_as_kernel(kernel))  # between runs: to an idle kernel
    latch.expect()
    assert not latch.sent  # that one was not this run's
    latch.request(_as_kernel(kernel))
    latch.expect()  # the run's second expect (after its spool mark) keeps the hold
    assert not latch.sent  # held, not sent
    latch.begun(_as_kernel(kernel))
    assert latch.sent
