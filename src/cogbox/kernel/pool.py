"""A warm pool: kernels of one image started ahead of time, so a session is ready at once.

    with KernelPool("cntk", size=2) as pool:
        session = pool.acquire()      # a started, idle session; the pool starts a new one
        ...                           # the caller owns it: session.shutdown() when done

Each pooled kernel is a whole `Session` (its own jail and a fresh, empty /home/work), made
before anyone asked for it, and warmed up with the modules its image's recipe names in
`kernel.preload` (cntk: `import cntk` is then instant). `acquire` takes one out of the pool
for good: a kernel is handed out once, never returned or shared, so no session ever sees
another's variables or files. One background thread keeps the pool full, starting one
kernel at a time (a start is CPU-bound; starting several at once would slow the sessions
already running). A kernel waiting in the pool has the lowest CPU weight, and gets its
policy's when it is handed out (cgroups.py: the jails together weigh what their kernels
would as plain processes, and an idle pooled one must not add to that).

Under demand the pool grows: each time a session wanted one and none was ready (a miss),
the pool aims for one more, up to `max_size` (default: four times `size`); once it has been
full with no miss for `shrink_after` seconds it aims one lower again, down to `size`. `size` is what
the pool aims for now (what GET /v1/pools reports), `base_size` what it was asked for.

With `workdirs`, each pooled session's /home/work is a fresh folder `pool-<id>/home` in
it, and whoever acquires the session keeps that folder after its shutdown (the service
keeps sessions' files); the pool deletes only those of the sessions it never handed out.
With `states_dir`, each pooled session persists in `pool-<id>` there (Session's state_dir),
so that a session handed one survives a restart of its agent like a cold-started one.
"""

import contextlib
import logging
import secrets
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from cogbox.images.store import Image, ImageStore
from cogbox.jail.policy import Policy
from cogbox.kernel.errors import KernelError
from cogbox.kernel.session import DEFAULT_OUTPUT_LIMIT, Session, new_workdir, resolve_image

_log = logging.getLogger(__name__)
_RETRY_SECONDS = 5.0  # after a failed start, before the next try
# A pooled kernel waits at most this long, then is replaced by a fresh one: its jail's
# wall-time limit runs from its start, and a session should get the whole of it.
MAX_AGE_SECONDS = 3600.0
POOL_PREFIX = "pool-"  # the name of a pooled kernel's work dir and state folder
SHRINK_AFTER_SECONDS = 300.0  # without a miss, before a grown pool aims one lower


class KernelPool:
    """`size` ready sessions of `image` (jailed by `policy`, default: the image's own).

    `warmup` is code each pooled kernel runs before it is handed out, e.g.
    `"__import__('cntk')"` to have a heavy library loaded (not bound to a name) already;
    by default it imports the image's `kernel.preload` modules.
    """

    def __init__(
        self,
        image: str | Image,
        size: int = 2,
        policy: Policy | None = None,
        *,
        env: dict[str, str] | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        store: ImageStore | None = None,
        warmup: str | None = None,
        workdirs: Path | None = None,
        states_dir: Path | None = None,
        max_age: float = MAX_AGE_SECONDS,
        max_size: int | None = None,
        shrink_after: float = SHRINK_AFTER_SECONDS,
    ) -> None:
        if size < 1:
            raise KernelError(f"a kernel pool needs a size of at least 1, got {size}")
        self.image, self.policy = resolve_image(image, policy, store)
        self.size = self.base_size = size
        self.max_size = max(size, max_size if max_size is not None else size * 4)
        self.misses = 0  # sessions that wanted a pooled kernel and found none ready
        self._shrink_after = shrink_after
        self._last_miss = 0.0
        self._full_since = 0.0
        self._env = dict(env or {})
        self._output_limit = output_limit
        self._warmup = preload_code(self.image) if warmup is None else warmup
        self._workdirs = workdirs
        self._states_dir = states_dir
        self._ready: deque[Session] = deque()
        self._max_age = max_age
        self._started_at: dict[str, float] = {}  # session id -> when it was ready
        self._closed = False
        self._last_error: str | None = None
        self._changed = threading.Condition()
        self._filler = threading.Thread(
            target=self._fill, name=f"kernel-pool-{self.image.name}", daemon=True
        )
        self._filler.start()

    @property
    def ready_count(self) -> int:
        """How many started sessions wait in the pool now."""
        with self._changed:
            return len(self._ready)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the pool is full; False if `timeout` seconds passed first."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._closed or len(self._ready) >= self.size, timeout
            )

    def try_acquire(self) -> Session | None:
        """A started, idle session if one is ready now (the pool starts its replacement),
        else None; never waits."""
        try:
            return self.acquire(timeout=0)
        except KernelError:  # none ready, or the pool is closed
            with self._changed:
                self.misses += 1
                self._last_miss = time.monotonic()
                if self.size < self.max_size:
                    self.size += 1  # demand outran the pool: keep one more ready
                    self._changed.notify_all()
            return None

    def take_ready(self) -> Session | None:
        """Like `try_acquire`, but a miss is not counted: for a start that missed once, waited
        its turn to start cold, and finds that the pool (grown by its miss) has one now."""
        try:
            return self.acquire(timeout=0)
        except KernelError:
            return None

    def acquire(self, timeout: float | None = 60.0) -> Session:
        """A started, idle session, now the caller's alone; the pool starts its replacement.

        Waits (at most `timeout` seconds) only when the pool is empty. Raises KernelError
        when the pool is closed or no kernel became ready in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._changed:
                while not self._ready:
                    if self._closed:
                        raise KernelError("the kernel pool is closed")
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        why = (
                            f" (last start failed: {self._last_error})" if self._last_error else ""
                        )
                        raise KernelError(
                            f"no {self.image.name} kernel became ready within {timeout:g} s{why}"
                        )
                    self._changed.wait(left)
                session = self._ready.popleft()
                self._started_at.pop(session.id, None)
                self._changed.notify_all()  # the filler starts a replacement
            if session.alive:
                try:
                    session.weigh(self.policy.limits.cpus)
                    return session
                except KernelError as exc:  # would stay at a waiting kernel's lowest weight
                    _log.warning("cannot weigh a pooled %s kernel: %s", self.image.name, exc)
            self._discard(session)  # died while waiting in the pool (its jail ended): next one

    def close(self) -> None:
        """Stop refilling and shut down the sessions still waiting; acquired ones live on."""
        with self._changed:
            self._closed = True
            idle = list(self._ready)
            self._ready.clear()
            self._changed.notify_all()
        self._filler.join()
        for session in idle:
            self._discard(session)

    def __enter__(self) -> "KernelPool":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _start(self) -> Session:
        name = f"{POOL_PREFIX}{secrets.token_hex(8)}"
        workdir = None
        if self._workdirs is not None:
            workdir = new_workdir(name, self._workdirs)
        # Persisted like any session's kernel, so the one handed out survives its agent.
        state_dir = None if self._states_dir is None else self._states_dir / name
        try:
            session = Session(
                self.image,
                self.policy,
                workdir,
                env=self._env,
                output_limit=self._output_limit,
                state_dir=state_dir,
            )
        except BaseException:
            if workdir is not None:
                shutil.rmtree(workdir.parent, ignore_errors=True)
            raise
        try:
            if self._warmup:
                session.warm_up(self._warmup)
        except BaseException:
            self._discard(session)
            raise
        try:
            session.weigh(0)  # it waits idle: refills and warm-ups of others go first
        except KernelError as exc:
            _log.warning("a pooled %s kernel keeps its weight: %s", self.image.name, exc)
        return session

    def _discard(self, session: Session) -> None:
        """Shut down a session nobody was handed, with its /home/work."""
        self._started_at.pop(session.id, None)
        with contextlib.suppress(KernelError):
            session.shutdown()
        if self._workdirs is not None:
            shutil.rmtree(session.workdir.parent, ignore_errors=True)

    def _take_stale(self) -> list[Session]:
        """Remove and return the ready sessions older than `max_age` (lock held)."""
        now = time.monotonic()
        stale = [s for s in self._ready if now - self._started_at[s.id] >= self._max_age]
        for session in stale:
            self._ready.remove(session)
        return stale

    def _next_expiry(self) -> float | None:
        """Seconds until the oldest ready session is stale, or until the pool may shrink;
        None if neither can happen."""
        waits = []
        if self._ready:
            oldest = min(self._started_at[s.id] for s in self._ready)
            waits.append(max(0.0, oldest + self._max_age - time.monotonic()))
        if self.size > self.base_size and len(self._ready) >= self.size:
            waits.append(max(0.0, self._quiet_since() + self._shrink_after - time.monotonic()))
        return min(waits) if waits else None

    def _quiet_since(self) -> float:
        """Since when the pool has been full with no miss (lock held)."""
        return max(self._last_miss, self._full_since)

    def _take_surplus(self) -> list[Session]:
        """Aim one lower once no miss was seen for `shrink_after` s; the ready sessions
        beyond the aim, removed (lock held)."""
        quiet = time.monotonic() - self._quiet_since() >= self._shrink_after
        if self.size > self.base_size and len(self._ready) >= self.size and quiet:
            self.size -= 1
            self._last_miss = time.monotonic()  # one step per quiet period
        surplus = []
        while len(self._ready) > self.size:
            surplus.append(self._ready.pop())  # the newest: the oldest are handed out first
        return surplus

    def _fill(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(
                    lambda: self._closed or len(self._ready) < self.size, self._next_expiry()
                )
                if self._closed:
                    return
                stale = self._take_stale() + self._take_surplus()
                full = len(self._ready) >= self.size
            for session in stale:
                self._discard(session)
            if full:
                continue
            try:
                session = self._start()
            except Exception as exc:  # keep the pool alive; acquire() reports the cause
                _log.warning("cannot start a pooled %s kernel: %s", self.image.name, exc)
                with self._changed:
                    self._last_error = str(exc)
                    self._changed.wait_for(lambda: self._closed, _RETRY_SECONDS)
                continue
            with self._changed:
                if not self._closed:
                    self._started_at[session.id] = time.monotonic()
                    self._ready.append(session)
                    if len(self._ready) >= self.size:
                        self._full_since = time.monotonic()
                    self._last_error = None
                    self._changed.notify_all()
                    continue
            self._discard(session)  # closed while it started
            return


def preload_code(image: Image) -> str:
    """Code importing the modules the image's recipe names in `kernel.preload` ("" if none),
    without binding their names: a pooled kernel's namespace stays as fresh as a new one's."""
    modules = image.info.kernel.preload
    return "; ".join(f"__import__({str(module)!r})" for module in modules)
