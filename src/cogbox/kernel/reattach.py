"""Taking a session back from another process: the run that was in flight replayed from its
monitor's spool, and what is left to say and reap of a kernel that ended meanwhile."""

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jupyter_client.session import Session as JupyterSession

from cogbox.jail.exit_reason import ExitReason
from cogbox.jail.launcher import JailExit
from cogbox.jail.reaper import reap_stale_jails
from cogbox.kernel.connection import reap_stale_runtimes
from cogbox.kernel.control import MonitorGone
from cogbox.kernel.errors import KernelGone
from cogbox.kernel.events import Error, Event, Finished, OutputTruncated
from cogbox.kernel.launch import KernelProcess
from cogbox.kernel.messages import POLL_MS, died, output_event
from cogbox.kernel.monitor import EXIT_FILE, SPOOL_CAP_BYTES
from cogbox.kernel.output_cap import OutputCap
from cogbox.kernel.provisioner import LocalProvisioner
from cogbox.kernel.session_state import PendingRun, SessionState


def replay_run(
    kernel: KernelProcess,
    run: PendingRun,
    *,
    output_limit: int,
    tap: Callable[[Event], None] | None,
) -> Iterator[Event]:
    """The events of `run` from its start: what the kernel's monitor spooled, then live
    until the run ends (`Finished` or `KernelDied`); `tap` sees each before the cap."""
    provisioner = kernel.provisioner
    assert isinstance(provisioner, LocalProvisioner)
    # Its own codec: a signature seen here must not count as a replay to the client's.
    codec = JupyterSession(key=kernel.runtime.key.encode(), signature_scheme="hmac-sha256")
    cap = OutputCap(output_limit)
    seq = run.seq
    count: int | None = None
    failed = False
    info: dict[str, Any] = {}
    while True:
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
        if not messages:
            ended = kernel.poll()
            if ended is not None:
                yield from _dropped(info)
                yield died(ended)
                return
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
