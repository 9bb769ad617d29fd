"""What a persisted session writes to its state folder, so another process can re-attach.

    <state_dir>/session.json   (root, 0600, in a 0700 folder; replaced atomically)
    <state_dir>/run.json       the run in flight, apart: written twice per run, while
                               session.json (its policy alone is kilobytes) changes only
                               when a kernel starts

It holds the Jupyter key of the kernel's messages, so it never leaves host-only folders:
the image by name@digest, the policy (as JSON), the work dir and binds, the session's host
identity slot, its runtime folder and key, its provisioner's `info()`, and the run in flight
(its run id, Jupyter msg_id, the number of its first spooled IOPub message, its deadline, and
the input requests it made: those go to the owner's stdin socket, never into the spool).
"""

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cogbox.jail.oci import Bind
from cogbox.kernel.errors import KernelError

STATE_FILE = "session.json"
RUN_FILE = "run.json"
LAUNCHING_FILE = "launching.json"  # a kernel started, not yet ready (save_launching)
_FORMAT = 1


@dataclass
class AskedInput:
    """An `input()` the run made: its prompt, and how many of the run's events came first."""

    at: int
    prompt: str
    password: bool = False


@dataclass
class PendingRun:
    """A run in flight: what its owner sent, and where its IOPub spool is read from."""

    run_id: str
    msg_id: str
    # The first spool number to read: 0, all the monitor kept (its spool starts afresh at
    # each run); a record an older agent wrote holds where its explicit mark began.
    seq: int = 0
    batch: bool = False
    # The time limit (`timeout` seconds) ends the run at `deadline` (time.time()), whoever
    # owns it then.
    timeout: float | None = None
    deadline: float | None = None
    asked: list[AskedInput] = field(default_factory=list)
    # The Jupyter session id of the client that sent it: the kernel sends the run's input
    # requests to that identity (cogbox.kernel.owner_stdin).
    owner: str = ""
    # What the run's owner asked to keep with it (the agent: where its output starts in
    # the session's log), for whoever takes the run over.
    note: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionState:
    session_id: str
    image: str  # name@digest
    policy: dict[str, Any]
    workdir: str
    owns_workdir: bool
    env: dict[str, str]
    binds: list[dict[str, Any]]
    output_limit: int
    runtime: str
    identity_slot: int
    runtime_dir: str
    key: str
    owner: int
    group: int
    provisioner: dict[str, Any] = field(default_factory=dict)
    run: PendingRun | None = None

    def bind_list(self) -> list[Bind]:
        return [Bind(**{**entry, "source": Path(entry["source"])}) for entry in self.binds]


def bind_dicts(binds: list[Bind]) -> list[dict[str, Any]]:
    return [{**asdict(bind), "source": str(bind.source)} for bind in binds]


def prepare(state_dir: Path) -> None:
    """Make `state_dir` a host-only folder (root's, 0700)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if state_dir.is_symlink() or not state_dir.is_dir():
        raise KernelError(f"the session's state folder {state_dir} is not a folder")
    os.chmod(state_dir, 0o700)


def save(state_dir: Path, state: SessionState) -> None:
    """Write `state` atomically (a reader sees the old or the new one, whole)."""
    _write(state_dir, STATE_FILE, {"format": _FORMAT, **asdict(state)})


def save_run(state_dir: Path, run: PendingRun | None) -> None:
    """Record the run in flight (None: no run is), beside the session's own state."""
    if run is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_dir / RUN_FILE)
        return
    # By hand, not asdict: this is written at every run's start (asdict deep-copies).
    record = {**vars(run), "asked": [vars(asked) for asked in run.asked]}
    _write(state_dir, RUN_FILE, {"format": _FORMAT, "run": record})


def save_launching(state_dir: Path, provisioner: dict[str, Any]) -> None:
    """Record a kernel's provisioner `info()` as soon as its jail runs, before the kernel is
    ready and `save` can run: an agent killed in between leaves this, so the next one can
    stop that jail instead of leaving it running under its monitor."""
    _write(state_dir, LAUNCHING_FILE, provisioner)


def launching(state_dir: Path) -> dict[str, Any] | None:
    """The provisioner `info()` `save_launching` recorded, if any."""
    try:
        record = _read(state_dir, LAUNCHING_FILE)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read(state_dir: Path, name: str) -> Any:
    """The JSON in `state_dir/name`, never read through a link."""
    fd = os.open(state_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        return json.loads(handle.read())


def _write(state_dir: Path, name: str, value: dict[str, Any]) -> None:
    data = json.dumps(value).encode()
    temporary = state_dir / f".{name}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    try:
        # No fsync: the state must outlive the agent's process (its page cache outlives it
        # too), not the machine, after whose reboot no kernel is left to attach to. It is
        # written twice per run: an fsync each was a fifth of the agent's time per run.
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, state_dir / name)


def load(state_dir: Path) -> SessionState:
    """The state persisted in `state_dir`; KernelError if it holds no session."""
    try:
        record = _read(state_dir, STATE_FILE)
    except (OSError, ValueError) as exc:
        raise KernelError(f"{state_dir} holds no session to attach to ({exc})") from exc
    if not isinstance(record, dict) or record.pop("format", None) != _FORMAT:
        raise KernelError(f"{state_dir} holds no session of a format this cogbox reads")
    run = record.pop("run", None)
    try:
        run = _read(state_dir, RUN_FILE).get("run")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError) as exc:
        raise KernelError(f"{state_dir} holds an unreadable run in flight: {exc}") from exc
    try:
        state = SessionState(**record)
    except TypeError as exc:
        raise KernelError(f"{state_dir} holds an unreadable session record: {exc}") from exc
    try:
        state.run = _pending_run(run) if isinstance(run, dict) else None
    except TypeError as exc:
        raise KernelError(f"{state_dir} holds an unreadable run in flight: {exc}") from exc
    return state


def _pending_run(record: dict[str, Any]) -> PendingRun:
    asked = [AskedInput(**entry) for entry in record.pop("asked", [])]
    return PendingRun(**record, asked=asked)


def remove(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(state_dir)
