"""Taking a session back from another process: the run that was in flight replayed from its
monitor's spool, and what is left to say and reap of a kernel that ended meanwhile."""

import contextlib
import json
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.session import Session as JupyterSession

from cogbox.jail.exit_reason import ExitReason
from cogbox.jail.launcher import JailExit
from cogbox.jail.reaper import reap_stale_jails
from cogbox.kernel.connection import reap_stale_runtimes
from cogbox.kernel.control import MonitorGone
from cogbox.kernel.errors import KernelGone
from cogbox.kernel.events import Error, Event, Finished, InputRequest, OutputTruncated
from cogbox.kernel.interrupt import INTERRUPT_GRACE_SECONDS
from cogbox.kernel.launch import KernelProcess
from cogbox.kernel.messages import POLL_MS, died, output_event
from cogbox.kernel.monitor import EXIT_FILE, SPOOL_CAP_BYTES
from cogbox.kernel.output_cap import OutputCap
from cogbox.kernel.owner_stdin import OwnerStdin
from cogbox.kernel.provisioner import LocalProvisioner
from cogbox.kernel.run_request import timeout_finished
from cogbox.kernel.session_state import AskedInput, PendingRun, SessionState


def replay_run(
    kernel: KernelProcess,
    run: PendingRun,
    *,
    output_limit: int,
    tap: Callable[[Event], None] | None,
    inputs: "queue.Queue[str]",
    stuck: Callable[[], Iterator[Event]],
    on_asked: Callable[[AskedInput], None],
) -> Iterator[Event]:
    """The events of `run` from its start: what the kernel's monitor spooled, then live
    until the run ends (`Finished` or `KernelDied`); `tap` sees each before the cap.

    The run's input requests go to its first owner's stdin identity, not into the spool:
    each one that owner saw is put back where it yielded it; new ones are heard on a socket
    of that identity (OwnerStdin), recorded in `run.asked` and told to `on_asked` (persist
    them: a later owner puts them back too). Answers queued in `inputs` go to the kernel.
    Its time limit still holds: past the run's deadline the code is interrupted, and
    `stuck()` (a restart) ends a run that ignores that."""
    asked = list(run.asked)
    count = 0
    stdin = None
    if run.owner:
        endpoint = kernel.client.stdin_channel.socket.getsockopt(zmq.LAST_ENDPOINT)
        stdin = OwnerStdin(endpoint.decode(), kernel.runtime.key, run.owner)
    try:
        for event in _spooled(kernel, run, output_limit, tap, inputs, stuck, stdin):
            while asked and asked[0].at <= count:
                again = asked.pop(0)
                yield InputRequest(again.prompt, again.password)
                count += 1
            if isinstance(event, InputRequest):  # asked live, of this owner
                run.asked.append(AskedInput(count, event.prompt, event.password))
                on_asked(run.asked[-1])
            if event is not None:
                yield event
                count += 1
    finally:
        if stdin is not None:
            stdin.close()


def _spooled(
    kernel: KernelProcess,
    run: PendingRun,
    output_limit: int,
    tap: Callable[[Event], None] | None,
    inputs: "queue.Queue[str]",
    stuck: Callable[[], Iterator[Event]],
    stdin: OwnerStdin | None,
) -> Iterator[Event | None]:
    """The run's events; None each time the spool has nothing new (the kernel may wait on
    an input request of the run that the caller has yet to put back)."""
    provisioner = kernel.provisioner
    assert isinstance(provisioner, LocalProvisioner)
    # Its own codec: a signature seen here must not count as a replay to the client's.
    codec = JupyterSession(key=kernel.runtime.key.encode(), signature_scheme="hmac-sha256")
    cap = OutputCap(output_limit)
    seq = run.seq
    count: int | None = None
    failed = False
    interrupted_at: float | None = None
    info: dict[str, Any] = {}
    while True:
        now = time.monotonic()
        if run.deadline is not None and interrupted_at is None and time.time() > run.deadline:
            kernel.interrupt()
            interrupted_at = now
        if interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE_SECONDS:
            yield from stuck()
            return
        while not inputs.empty():
            answer = inputs.get_nowait()
            if stdin is not None:
                stdin.answer(answer)
            else:
                kernel.client.input(answer)
        if stdin is not None:
            yield from stdin.asked(run.msg_id)
        try:
            messages, info = provisioner.spool(seq)
        except MonitorGone:
            messages = []
        for number, frames in messages:
            seq = number + 1
            try:
                _, parts = codec.feed_identities(frames, copy=True)
                msg = codec.deserialize(parts, content=True, copy=True)
            except (ValueError, TypeError, KeyError):
                continue  # not a message signed with the session's key
            if msg["parent_header"].get("msg_id") != run.msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                yield from _dropped(info)
                if interrupted_at is not None:
                    yield timeout_finished(count, run.timeout)
                else:
                    yield _resumed_finish(run, count, failed)
                kernel.ensure_ready()
                return
            if kind == "execute_input":
                count = content.get("execution_count")
            event = output_event(kind, content)
            failed = failed or isinstance(event, Error)
            if event is not None and tap is not None:
                tap(event)
            yield from cap.admit(event)
        begun = info.get("begun") or []
        if run.msg_id in begun and begun[-1] != run.msg_id:
            # A later request began, so this run ended; the spool started afresh there.
            yield OutputTruncated(
                SPOOL_CAP_BYTES,
                "output dropped: this run ended while nobody was attached, and a later "
                "request began before its end was read, so the end of its output is lost",
            )
            yield _resumed_finish(run, count, failed)
            return
        if not messages:
            ended = kernel.poll()
            if ended is not None:
                yield from _dropped(info)
                yield died(ended)
                return
            yield None
            time.sleep(POLL_MS / 1000)


def _resumed_finish(run: PendingRun, count: int | None, failed: bool) -> Finished:
    if run.batch:
        return Finished(
            "error" if failed else "ok",
            None,
            "the batch command's exit status went to the session's previous owner",
        )
    return Finished("error" if failed else "ok", count)


def _dropped(info: dict[str, Any]) -> Iterator[Event]:
    messages = int(info.get("dropped_messages", 0))
    if messages:
        yield OutputTruncated(
            SPOOL_CAP_BYTES,
            f"output dropped: while nobody was attached the kernel's monitor kept "
            f"{SPOOL_CAP_BYTES >> 20} MiB of this run's output and dropped {messages:,} "
            f"messages ({int(info.get('dropped_bytes', 0)):,} bytes) after that",
        )


def kernel_gone(ended: JailExit) -> KernelGone:
    """The error that says a session's kernel ended while nobody was attached."""
    return KernelGone(
        str(ended.reason), ended.message, limit_hit=ended.limit_hit, returncode=ended.returncode
    )


def recorded_exit(state: SessionState) -> JailExit:
    """The exit its monitor recorded before it ended (else: it died with its jail)."""
    folder = state.provisioner.get("folder")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads((Path(str(folder)) / EXIT_FILE).read_text())
        return JailExit(int(record["returncode"]), ExitReason(record["reason"]), record["message"])
    return JailExit(
        -1, ExitReason.KILLED, "killed: the kernel's monitor ended, and its jail with it"
    )


def reap_leftovers(runtime_dir: Path) -> None:
    """Remove what a kernel whose monitor is gone left: nothing holds the jail's bundle,
    the runtime folder or the identity slot, and the reapers take exactly those (never a
    live kernel's)."""
    with contextlib.suppress(Exception):
        reap_stale_jails()
    with contextlib.suppress(Exception):
        reap_stale_runtimes(runtime_dir.parent)
