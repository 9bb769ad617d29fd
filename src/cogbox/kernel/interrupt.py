"""The interrupt latch of a session: an interrupt that overtakes its run is held, not lost."""

import threading
import time

from cogbox.kernel.launch import KernelProcess

# An interrupt held for a run whose code has not begun is sent anyway after this long (the
# kernel may be busy with something else that SIGINT should stop).
INTERRUPT_HOLD_SECONDS = 2.0
# How long an interrupted run may take to stop before the kernel is restarted instead.
INTERRUPT_GRACE_SECONDS = 5.0


class InterruptLatch:
    """SIGINT stops running code only: ipykernel ignores it between requests and takes it
    as KeyboardInterrupt once it has begun a request's code (it publishes execute_input
    then). An interrupt that overtakes its run (sent, not yet begun) is held until the
    code begins, or for INTERRUPT_HOLD_SECONDS, instead of being lost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._begun = True
        self._held_since: float | None = None
        self.sent = False  # an interrupt reached the kernel since the run was expected

    def expect(self) -> None:
        """A run is on its way to the kernel; its code has not begun."""
        with self._lock:
            if self._begun:  # a new run (a run may say so twice: what it was sent stays)
                self.sent = False
            self._begun = False

    def request(self, kernel: KernelProcess) -> None:
        with self._lock:
            if not self._begun:
                self._held_since = self._held_since or time.monotonic()
                return
            self.sent = True
        kernel.interrupt()

    def begun(self, kernel: KernelProcess) -> None:
        with self._lock:
            held, self._begun, self._held_since = self._held_since, True, None
            self.sent = self.sent or held is not None
        if held is not None:
            kernel.interrupt()

    def send_overdue(self, kernel: KernelProcess) -> None:
        with self._lock:
            held = self._held_since
            if held is None or time.monotonic() - held < INTERRUPT_HOLD_SECONDS:
                return
            self._held_since = None
            self.sent = True
        kernel.interrupt()

    def ended(self) -> None:
        with self._lock:
            self._begun, self._held_since = True, None
