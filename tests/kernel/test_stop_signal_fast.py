"""StopSignal (kernel/stop_signal.py): the stop flag the monitor's and the kernel log's
threads block on, with no timeout, next to the fd they serve."""

import select
import threading
import time

from cogbox.kernel.stop_signal import StopSignal


def test_a_thread_blocked_on_its_fd_wakes_when_it_is_set() -> None:
    stop = StopSignal()
    woke: list[float] = []

    def wait() -> None:
        select.select([stop.fd], [], [])  # no timeout: only the signal ends this
        woke.append(time.monotonic())

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.2)
    assert not woke and not stop.is_set()
    set_at = time.monotonic()
    stop.set()
    stop.set()  # twice: still one wake-up, no error
    waiter.join(5)
    assert woke and woke[0] - set_at < 1
    assert stop.is_set() and stop.wait(0)


def test_wait_times_out_unset_and_a_closed_signal_only_sets_its_flag() -> None:
    stop = StopSignal()
    assert stop.wait(0.05) is False
    stop.close()
    stop.set()  # after close: no write to an fd that may be another file's by now
    assert stop.is_set()
