"""A stop flag that a select or poll can wait on, so a thread blocks until there is work
or it is told to stop, instead of waking a few times a second to look at a flag (20 idle
kernels' monitors did that hundreds of times a second between them)."""

import os
import select
import threading


class StopSignal:
    """Like `threading.Event` for stopping, with `fd`, which turns readable once `set`."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._set = False
        self._closed = False

    @property
    def fd(self) -> int:
        return self._read

    def set(self) -> None:
        with self._lock:
            if not self._set and not self._closed:
                os.write(self._write, b"x")
            self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it was set within `timeout` seconds (None: until it is)."""
        if not self._set and not self._closed:
            select.select([self._read], [], [], timeout)
        return self._set

    def close(self) -> None:
        """Release its fds, once nothing waits on it (a later `set` only sets the flag)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read)
                os.close(self._write)
