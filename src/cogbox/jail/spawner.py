"""Start every runtime process from one thread that lives as long as this process.

The kernel sends a parent-death signal when the *thread* that forked a child ends, not its
process; started from short-lived threads (a worker pool's), runc would be killed under a
live driver.
"""

import queue
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future

_Start = Callable[[], subprocess.Popen[bytes]]


class _Spawner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[tuple[_Start, Future[subprocess.Popen[bytes]]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def popen(self, start: _Start) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="cogbox-jail-spawner", daemon=True
                )
                self._thread.start()
        started: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((start, started))
        return started.result()

    def _serve(self) -> None:
        while True:
            start, started = self._requests.get()
            try:
                started.set_result(start())
            except BaseException as exc:  # handed to the caller, raised in its thread
                started.set_exception(exc)


_SPAWNER = _Spawner()


def spawn(start: _Start) -> subprocess.Popen[bytes]:
    """Call `start` (which makes a Popen) on the spawner thread and return its process."""
    return _SPAWNER.popen(start)
