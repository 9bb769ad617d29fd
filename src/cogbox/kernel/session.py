"""Persistent, jailed code sessions: run code in a kernel that keeps its state between runs.

    with start_session("python") as session:
        for event in session.execute("x = 6 * 7; print(x)", timeout=30):
            ...   # Stdout("42\\n"), then Finished(status="ok", execution_count=1)

`execute` translates the kernel's Jupyter messages into `cogbox.kernel.events` and always
ends with exactly one terminal event: `Finished` (ok, error, aborted, timeout) or
`KernelDied` (the jail ended: out of memory, a limit, a crash). While it waits for output
it also watches the jail, so a dead kernel is reported within a fraction of a second instead
of leaving the caller waiting on a socket nobody will ever write to again.

Thread use: one thread iterates `execute`; `interrupt` and `send_input` may be called from
any thread (an input answer is queued and sent by the iterating thread).
"""

import asyncio
import contextlib
import json
import os
import queue
import secrets
import shutil
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogbox.config import data_dir
from cogbox.images.store import Image, ImageStore
from cogbox.jail.identity import Identity, IdentityError, IdentityLease, allocate
from cogbox.jail.launcher import JailExit
from cogbox.jail.oci import Bind
from cogbox.jail.policy import Policy, policy_or_default
from cogbox.kernel import files, session_state
from cogbox.kernel.connection import RuntimeDir
from cogbox.kernel.control import MonitorGone
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import Event, Finished, InputRequest, KernelDied
from cogbox.kernel.interrupt import INTERRUPT_GRACE_SECONDS, InterruptLatch
from cogbox.kernel.launch import KernelProcess
from cogbox.kernel.messages import POLL_MS, Channels, died
from cogbox.kernel.output_cap import OutputCap
from cogbox.kernel.provisioner import (
    KernelProvisioner,
    LocalProvisioner,
    attach_provisioner,
    provisioner_for,
)
from cogbox.kernel.reattach import kernel_gone, reap_leftovers, recorded_exit, replay_run
from cogbox.kernel.relay import KernelChannels, new_message
from cogbox.kernel.run_progress import RunProgress
from cogbox.kernel.run_request import RunRequest, batch_request
from cogbox.kernel.session_state import PendingRun

# Backend.AI's cap on the console output of one execute call, in characters.
DEFAULT_OUTPUT_LIMIT = 524_288
REQUEST_TIMEOUT_SECONDS = 10.0

InputHandler = Callable[[InputRequest], str]


@dataclass(frozen=True)
class Completion:
    """Tab completion: replace `code[cursor_start:cursor_end]` with one of `matches`."""

    matches: list[str]
    cursor_start: int
    cursor_end: int


def start_session(
    image: str | Image,
    policy: Policy | None = None,
    workdir: Path | None = None,
    *,
    env: dict[str, str] | None = None,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    store: ImageStore | None = None,
    binds: Sequence[Bind] = (),
    runtime: str = "runc",
    state_dir: Path | None = None,
) -> "Session":
    """Start a kernel of `image` in a jail and return its session, ready to execute code.

    `policy` defaults to the image's own policy.yml (else the jail's default policy).
    `workdir` is the host directory shown at /home/work; without one the session makes a
    fresh one and deletes it at shutdown. `runtime` is "runc" or "runsc" (gVisor).
    `state_dir`: a host-only folder where the session persists what `Session.attach` needs
    to take it back from another process; its kernel then outlives this process (None:
    the kernel ends with this process). Raises KernelError if the kernel does not start.
    """
    image, policy = resolve_image(image, policy, store)
    return Session(
        image,
        policy,
        workdir,
        env=env,
        output_limit=output_limit,
        binds=binds,
        runtime=runtime,
        state_dir=state_dir,
    )


def resolve_image(
    image: str | Image, policy: Policy | None = None, store: ImageStore | None = None
) -> tuple[Image, Policy]:
    """The ready image named `image` and the policy to jail it with (default: its own)."""
    if isinstance(image, str):
        image = (store or ImageStore()).get(image)
    if policy is None:
        policy = policy_or_default(image.policy_path)
    return image, policy


def new_workdir(session_id: str, root: Path | None = None) -> Path:
    """A fresh, empty /home/work for a session: `home` in the session's own folder in
    `root` (default: `sessions/` in the data dir). The jail gives it to its identity."""
    workdir = (root or data_dir() / "sessions") / session_id / "home"
    workdir.mkdir(parents=True, mode=0o755)
    return workdir


class Session:
    """A kernel in a jail, whose variables live from one `execute` to the next."""

    def __init__(
        self,
        image: Image,
        policy: Policy,
        workdir: Path | None = None,
        *,
        env: dict[str, str] | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        binds: Sequence[Bind] = (),
        runtime: str = "runc",
        state_dir: Path | None = None,
    ) -> None:
        provisioner_for(runtime)  # KernelError naming an unknown or missing runtime
        self.id = secrets.token_hex(8)
        self.runtime = runtime
        self.state_dir = state_dir
        self._pending: PendingRun | None = None
        self._binds = list(binds)  # extra folders (storage folders), for every kernel it starts
        self.image = image
        self.policy = policy
        self._policy_dump: tuple[Policy, dict[str, Any]] | None = None
        self.output_limit = output_limit
        # Sees every output event before the cap drops any (the service's full session log).
        self.output_tap: Callable[[Event], None] | None = None
        self._env = dict(env or {})
        self._owns_workdir = workdir is None
        self.workdir = new_workdir(self.id) if workdir is None else workdir
        self._inputs: queue.Queue[str] = queue.Queue()
        self._interrupt = InterruptLatch()
        self._executing = False
        self._closed = False
        self._restart_failure: str | None = None  # why the last restart did not start one
        # The session's host ids, the same for every kernel it starts (see jail/identity.py).
        try:
            self._identity = allocate()
        except (IdentityError, OSError) as exc:
            self._remove_own_workdir()
            raise KernelError(f"cannot give the session a host identity: {exc}") from exc
        try:
            self._runtime = RuntimeDir.create()
        except BaseException:
            self._identity.release()
            self._remove_own_workdir()
            raise
        try:
            if state_dir is not None:
                session_state.prepare(state_dir)
            self._kernel: KernelProcess | None = self._start_kernel()
        except BaseException:
            self._release_files()
            raise

    @classmethod
    def attach(cls, state_dir: Path, *, store: ImageStore | None = None) -> "Session":
        """Take back, from this process, the live kernel of the session persisted in
        `state_dir`: its variables, execution count and files are as they were.

        Raises KernelGone (with the jail's exit reason) if the kernel ended while nobody
        was attached (what it left is then removed, with `state_dir`), KernelError if the
        folder holds no session. A run that was in flight is `pending_run`: `resume_run()`.
        """
        state = session_state.load(state_dir)
        name, _, digest = state.image.partition("@")
        image = (store or ImageStore()).find(name, digest)
        if image is None:
            raise KernelError(f"image {state.image} of the session is gone from this host")
        self = cls.__new__(cls)
        self.id = state.session_id
        self.runtime = state.runtime
        self.state_dir = state_dir
        self.image = image
        self.policy = Policy.model_validate(state.policy)
        self._policy_dump = (self.policy, state.policy)
        self.output_limit = state.output_limit
        self.output_tap = None
        self._binds = state.bind_list()
        self._env = dict(state.env)
        self._owns_workdir = state.owns_workdir
        self.workdir = Path(state.workdir)
        self._inputs = queue.Queue()
        self._interrupt = InterruptLatch()
        self._executing = False
        self._closed = False
        self._restart_failure = None
        self._pending = state.run
        try:
            provisioner = attach_provisioner(state.provisioner)
        except MonitorGone:
            ended = recorded_exit(state)
            self._closed = True
            reap_leftovers(Path(state.runtime_dir))
            self._remove_own_workdir()
            session_state.remove(state_dir)
            raise kernel_gone(ended) from None
        if not isinstance(provisioner, LocalProvisioner):
            raise KernelError(f"cannot re-attach to a {provisioner.kind} kernel from here")
        runtime_lock, identity_fd = provisioner.held_fds()
        self._identity = IdentityLease.adopt(Identity(state.identity_slot), identity_fd)
        self._runtime = RuntimeDir.adopt(
            Path(state.runtime_dir), state.key, runtime_lock, state.owner, state.group
        )
        gone = provisioner.poll()
        if gone is not None:
            self._closed = True
            try:
                provisioner.cleanup()
            finally:
                self._release_files()
            raise kernel_gone(gone)
        self._kernel = KernelProcess.attach(provisioner, self._runtime)
        return self

    # ------------------------------------------------------------------ state

    @property
    def alive(self) -> bool:
        """Whether the kernel runs (False once it died or the session was shut down)."""
        return self._kernel is not None and self._kernel.poll() is None

    def weigh(self, cpus: float | None) -> None:
        """Set the kernel's CPU weight (`KernelProvisioner.weigh`); KernelError if it cannot."""
        if self._kernel is None:
            raise KernelError("the session has no kernel to weigh")
        self._kernel.provisioner.weigh(cpus)

    @property
    def host_identity(self) -> Identity:
        """The host ids this session's jail runs as (uid 1000 inside is its `host_uid`)."""
        return self._identity.identity

    @property
    def exit(self) -> JailExit | None:
        """How the kernel's jail ended, once it has."""
        return None if self._kernel is None else self._kernel.poll()

    @property
    def restart_failure(self) -> str | None:
        """Why the last restart started no kernel (the session is dead until a restart
        works), or None."""
        return self._restart_failure

    @property
    def pending_run(self) -> str | None:
        """After `attach`: the run id of the run that was in flight when the previous owner
        let go (`resume_run` streams it), else None."""
        return None if self._pending is None else self._pending.run_id

    @property
    def pending_note(self) -> dict[str, Any]:
        """What the owner of `pending_run` kept with it (its `RunRequest.note`)."""
        return {} if self._pending is None else dict(self._pending.note)

    def connection_info(self) -> dict[str, Any]:
        """Jupyter connection info (ipc:// links to the kernel's proven sockets, and its
        key) to reach the kernel from this process; valid across restarts of the kernel."""
        return dict(self._runtime.connection_info())

    @property
    def kernel_info(self) -> dict[str, Any]:
        """The kernel's `kernel_info_reply` (language, versions)."""
        return {} if self._kernel is None else self._kernel.kernel_info

    # ------------------------------------------------------------------ running code

    def execute(
        self,
        code: str,
        *,
        timeout: float | None = None,
        on_input: InputHandler | None = None,
        run_id: str | None = None,
    ) -> Iterator[Event]:
        """Run `code` in the session's namespace; yields its events as they happen.

        `timeout` (seconds) limits this run: when it passes, the run is interrupted and ends
        with `Finished(status="timeout")`; the kernel and its variables survive. When the
        code asks for input, an `InputRequest` is yielded and answered by `on_input(request)`
        if given, else by a `send_input` call. Output past `output_limit` characters is
        dropped after one `OutputTruncated` event; the run itself goes on. A persisted
        session records `run_id` while the run is in flight (see `pending_run`).
        """
        self._check_idle(timeout)
        self._interrupt.expect()  # from now: an interrupt waits for this code to begin
        return self._run(RunRequest(code, run_id=run_id), timeout, on_input)

    def warm_up(self, code: str) -> None:
        """Run `code` out of the user's sight (not counted in the execution history), e.g.
        to import a heavy library before anyone asks; KernelError if it fails."""
        self._check_idle(None)
        events = list(self._run(RunRequest(code, store_history=False), None, None))
        last = events[-1] if events else None
        if not isinstance(last, Finished) or last.status != "ok":
            raise KernelError(f"the warm-up code {code!r} failed: {events}")

    def execute_batch(
        self,
        build: str | None,
        exec: str,
        *,
        timeout: float | None = None,
        run_id: str | None = None,
    ) -> Iterator[Event]:
        """Run the `build` command (if any), then the `exec` command, as processes.

        Backend.AI's batch mode: each command runs with `/bin/sh -c` in /home/work, in the
        same jail as the kernel (the kernel starts it), its output streamed as `Stdout` and
        `Stderr` events. If `build` fails, `exec` is not run. Ends with `Finished` whose
        `exit_code` is the exit status of the command that ran last ("ok" only when it is
        0; 128 + N when killed by signal N), or with `KernelDied`. `timeout` and
        `interrupt()` stop the command (SIGINT to its process group, then SIGKILL); the
        kernel's variables are not touched.
        """
        self._check_idle(timeout)
        request = batch_request(build, exec, run_id)
        self._interrupt.expect()
        return self._run(request, timeout, None)

    def _check_idle(self, timeout: float | None) -> None:
        if self._closed:
            raise KernelError(f"session {self.id} was shut down; start a new session")
        if self._pending is not None:
            raise KernelError(
                f"session {self.id} has the run {self._pending.run_id} of its previous owner "
                "in flight; resume_run() it first"
            )
        if self._executing:
            raise KernelError(
                f"session {self.id} is already running code; wait for its Finished event "
                "or interrupt() it"
            )
        if timeout is not None and timeout <= 0:
            raise KernelError(f"timeout must be a positive number of seconds, got {timeout}")

    def _run(
        self, request: RunRequest, timeout: float | None, on_input: InputHandler | None
    ) -> Iterator[Event]:
        # Marked busy only once iteration starts: a generator never iterated never runs
        # its `finally`, and would leave the session busy for good.
        if self._executing:
            raise KernelError(f"session {self.id} is already running code")
        self._executing = True
        try:
            kernel = self._kernel
            if kernel is None:
                yield self._restart_failed()
                return
            ended = kernel.poll()
            if ended is not None:
                yield died(ended, "; restart() the session to run code again")
                return
            kernel.ensure_ready()
            yield from self._run_in(kernel, request, timeout, on_input)
        finally:
            self._executing = False

    def _run_in(
        self,
        kernel: KernelProcess,
        request: RunRequest,
        timeout: float | None,
        on_input: InputHandler | None,
    ) -> Iterator[Event]:
        client = kernel.client
        channels = Channels(client)
        _clear(self._inputs)
        # A persisted session's monitor spools this run's IOPub from here on.
        spooled = self._spools(kernel)
        self._interrupt.expect()
        msg = client.session.msg("execute_request", request.content())
        client.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        pending = self._pending_run(request, msg_id, spooled, timeout, client.session.session)
        progress = self._progress(request, pending)
        start = time.monotonic()
        interrupted_at: float | None = None
        done = False
        try:
            while not progress.over:
                ended = kernel.poll()
                if ended is not None:
                    yield died(ended)
                    done = True
                    return
                now = time.monotonic()
                if timeout is not None and interrupted_at is None and now - start > timeout:
                    kernel.interrupt()
                    interrupted_at = now
                if interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE_SECONDS:
                    yield from self._restart_after_stuck_run(timeout)
                    done = True
                    return
                self._interrupt.send_overdue(kernel)
                while not self._inputs.empty():
                    client.input(self._inputs.get_nowait())
                received = channels.receive(POLL_MS)
                if not received:
                    progress.quiet(time.monotonic())
                for channel, msg in received:
                    if msg["parent_header"].get("msg_id") != msg_id:
                        continue  # a reply to an earlier, abandoned run or a completion
                    for event in progress.take(channel, msg["msg_type"], msg["content"]):
                        yield event
                        if isinstance(event, InputRequest) and on_input is not None:
                            client.input(on_input(event))
            for event in progress.finish(interrupted_at is not None, timeout):
                yield event
            done = True
        finally:
            self._interrupt.ended()
            if not done and kernel.poll() is None:
                kernel.interrupt()  # the caller stopped listening: stop the code too
            if spooled:
                self._save_run(None)

    def _progress(self, request: RunRequest, pending: PendingRun | None) -> RunProgress:
        kernel = self._kernel
        assert kernel is not None
        return RunProgress(
            request,
            OutputCap(self.output_limit),
            on_begun=lambda: self._interrupt.begun(kernel),
            interrupted=lambda: self._interrupt.sent,
            tap=self.output_tap,
            pending=pending,
            save=self._save_run,
        )

    async def stream(
        self, channels: KernelChannels, request: RunRequest, timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """`execute` (or, with a `batch_request`, `execute_batch`) for a caller on an asyncio
        loop: the same events, limits and persistence, without a thread per run. The
        kernel's messages come through `channels`, the caller's own sockets on this
        session's kernel (made for `connection_info()`; they follow it across restarts),
        and only the parts a run reads are parsed: the parent header first, so another
        client's message stops there. Input answers: `send_input`."""
        self._check_idle(timeout)
        self._interrupt.expect()
        self._executing = True
        try:
            kernel = self._kernel
            if kernel is None:
                yield self._restart_failed()
                return
            ended = kernel.poll()
            if ended is not None:
                yield died(ended, "; restart() the session to run code again")
                return
            if not kernel.ready:
                await asyncio.to_thread(kernel.ensure_ready)
            if channels.hears is not kernel:  # a new kernel: its iopub heard yet?
                if not await channels.nudge(REQUEST_TIMEOUT_SECONDS):
                    raise KernelError(
                        f"the kernel did not answer within {REQUEST_TIMEOUT_SECONDS:g} s"
                    )
                channels.hears = kernel
            async for event in self._stream_in(kernel, channels, request, timeout):
                yield event
        finally:
            self._executing = False

    async def _stream_in(
        self,
        kernel: KernelProcess,
        channels: KernelChannels,
        request: RunRequest,
        timeout: float | None,
    ) -> AsyncIterator[Event]:
        _clear(self._inputs)
        spooled = self._spools(kernel)
        self._interrupt.expect()
        msg_id, message = new_message(
            "shell", "execute_request", request.content(), channels.identity
        )
        await channels.send(message)
        pending = self._pending_run(request, msg_id, spooled, timeout, channels.identity)
        progress = self._progress(request, pending)
        mine = msg_id.encode()
        start = time.monotonic()
        interrupted_at: float | None = None
        done = False
        try:
            while not progress.over:
                ended = kernel.poll()
                if ended is not None:
                    yield died(ended)
                    done = True
                    return
                now = time.monotonic()
                if timeout is not None and interrupted_at is None and now - start > timeout:
                    kernel.interrupt()
                    interrupted_at = now
                if interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE_SECONDS:
                    for event in await asyncio.to_thread(self._restart_stuck, timeout):
                        yield event
                    done = True
                    return
                self._interrupt.send_overdue(kernel)
                while not self._inputs.empty():
                    answer = {"value": self._inputs.get_nowait()}
                    await channels.send(new_message("stdin", "input_reply", answer)[1])
                received = await channels.receive(POLL_MS / 1000)
                if not received:
                    progress.quiet(time.monotonic())
                for incoming in received:
                    # Another client's message, or an earlier abandoned run's: not parsed.
                    # A random 32-hex msg_id in the parent header is that parent's own (a
                    # header's other fields are the sender's session, name, date, type);
                    # only the jailed code could forge one, and only into its own run.
                    if mine not in incoming.parts[1]:
                        continue
                    kind = str(json.loads(incoming.parts[0]).get("msg_type", ""))
                    content = json.loads(incoming.parts[3])
                    for event in progress.take(incoming.channel, kind, content):
                        yield event
            for event in progress.finish(interrupted_at is not None, timeout):
                yield event
            done = True
        finally:
            self._interrupt.ended()
            if not done and kernel.poll() is None:
                kernel.interrupt()  # the caller stopped listening: stop the code too
            if spooled:
                self._save_run(None)

    def _pending_run(
        self,
        request: RunRequest,
        msg_id: str,
        spooled: bool,
        timeout: float | None,
        owner: str,
    ) -> PendingRun | None:
        """The run in flight, persisted before its first event (a persisted session, whose
        monitor spools the run's IOPub from its "busy" status on)."""
        if not spooled:
            return None
        deadline = None if timeout is None else time.time() + timeout
        pending = PendingRun(
            request.run_id or msg_id,
            msg_id,
            batch=request.batch,
            timeout=timeout,
            deadline=deadline,
            owner=owner,
            note=dict(request.note or {}),
        )
        self._save_run(pending)
        return pending

    def _restart_stuck(self, timeout: float | None) -> list[Event]:
        return list(self._restart_after_stuck_run(timeout))

    def _restart_after_stuck_run(self, timeout: float | None) -> Iterator[Event]:
        why = (
            f"the run passed its time limit of {timeout:g} s"
            if timeout is not None
            else "the run was interrupted"
        )
        message = (
            f"stopped: {why} and did not stop within {INTERRUPT_GRACE_SECONDS:g} s of an "
            "interrupt, so the kernel was restarted (variables lost, /home/work kept)"
        )
        try:
            self._replace_kernel(graceful=False)  # it ignores interrupts: do not wait on it
        except KernelError:
            yield self._restart_failed()
            return
        yield Finished("timeout", None, message)

    def resume_run(self) -> Iterator[Event]:
        """After `attach`: the whole event stream of `pending_run`, from its start.

        Replayed from what the kernel's monitor spooled, then live until the run ends with
        `Finished` (its status and execution count as the kernel published them) or
        `KernelDied`. The same spool gives the same events, so a consumer that delivered
        the first N before its owner died skips N. Output the monitor had to drop (its
        spool is bounded) arrives as one `OutputTruncated` before the end. The run's time
        limit holds from its original deadline (it ends with `Finished("timeout")`), and
        each `InputRequest` its owner saw comes again in its place; `send_input` answers
        the one the kernel waits on.
        """
        if self._pending is None:
            raise KernelError(f"session {self.id} has no run in flight to resume")
        if self._executing:
            raise KernelError(f"session {self.id} is already streaming a run")
        return self._resume(self._pending)

    def _resume(self, run: PendingRun) -> Iterator[Event]:
        self._executing = True
        try:
            kernel = self._kernel
            if kernel is None:
                yield self._restart_failed()
                return
            yield from replay_run(
                kernel,
                run,
                output_limit=self.output_limit,
                tap=self.output_tap,
                inputs=self._inputs,
                stuck=lambda: self._restart_after_stuck_run(run.timeout),
                on_asked=lambda asked: self._save_run(run),  # `run.asked` holds it now
            )
        finally:
            self._executing = False
            self._pending = None
            self._save_run(None)

    def send_input(self, text: str) -> None:
        """Answer the pending `InputRequest` of the running code with `text`."""
        self._inputs.put(text)

    def interrupt(self) -> None:
        """Stop the running code (KeyboardInterrupt in it); the kernel and its state live on."""
        if self._kernel is not None and self._kernel.poll() is None:
            self._interrupt.request(self._kernel)

    def complete(self, code: str, cursor_pos: int | None = None) -> Completion:
        """Completions for `code` at `cursor_pos` (default: its end) from the live namespace."""
        if self._executing:
            raise KernelError(f"session {self.id} is running code; complete after it finishes")
        kernel = self._live_kernel()
        msg_id = kernel.client.complete(code, len(code) if cursor_pos is None else cursor_pos)
        content = self._shell_reply(kernel, msg_id, "complete_reply")
        return Completion(
            matches=[str(match) for match in content.get("matches", [])],
            cursor_start=int(content.get("cursor_start", 0)),
            cursor_end=int(content.get("cursor_end", len(code))),
        )

    def _shell_reply(self, kernel: KernelProcess, msg_id: str, kind: str) -> dict[str, Any]:
        channels = Channels(kernel.client, iopub=False, stdin=False)
        deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            ended = kernel.poll()
            if ended is not None:
                raise KernelError(f"the kernel died: {ended.message}")
            for _, msg in channels.receive(POLL_MS):
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == kind:
                    return dict(msg["content"])
        raise KernelError(f"the kernel sent no {kind} within {REQUEST_TIMEOUT_SECONDS:g} s")

    # ------------------------------------------------------------------ files

    def upload(self, dest: str, data: bytes) -> None:
        """Write `data` to `dest` (relative to /home/work), making missing folders.

        Raises UnsafePathError for an absolute path, "..", or a symbolic link on the way
        (links the code planted are never followed); KernelError when the quota is full.
        """
        files.write_file(self._workdir_view(), dest, data)

    def download(self, path: str, *, limit: int = files.DOWNLOAD_LIMIT_BYTES) -> bytes:
        """The contents of the regular file `path` (relative to /home/work), at most `limit`
        bytes; the same path rules as `upload`."""
        return files.read_file(self._workdir_view(), path, limit)

    def open_file(self, path: str, *, limit: int = files.DOWNLOAD_LIMIT_BYTES) -> files.OpenFile:
        """The regular file `path` opened for reading in chunks (the rules of `download`)."""
        return files.open_file(self._workdir_view(), path, limit)

    def create_file(self, dest: str) -> files.NewFile:
        """A new file at `dest` written in chunks, in place once committed (the rules of
        `upload`)."""
        return files.NewFile(self._workdir_view(), dest)

    def list_files(self, path: str = ".") -> list[files.FileEntry]:
        """The entries of the folder `path` in /home/work (links listed, never followed)."""
        return files.list_dir(self._workdir_view(), path)

    def _workdir_view(self) -> Path:
        # While a jail runs, /home/work may be a quota filesystem that reaches the host
        # directory only when the jail ends: use the jail's live view of it.
        if self._closed:
            raise KernelError(f"session {self.id} was shut down; its files are gone")
        view = self._kernel.workdir_view if self._kernel is not None else None
        return view or self.workdir

    # ------------------------------------------------------------------ lifecycle

    def restart(self) -> None:
        """A fresh kernel with empty variables; files in /home/work are kept.

        Works on a dead kernel too: this is how a session goes on after `KernelDied`.
        """
        if self._closed:
            raise KernelError(f"session {self.id} was shut down; start a new session")
        if self._executing:
            raise KernelError(f"session {self.id} is running code; interrupt() it first")
        self._replace_kernel()

    def shutdown(self) -> None:
        """Stop the kernel and remove its jail; deletes /home/work if the session made it,
        and the state folder of a persisted session."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stop_kernel()
        finally:
            self._release_files()

    def move_state(self, state_dir: Path) -> None:
        """Persist in `state_dir` from now on (a pooled kernel handed to its session takes the
        session's name); the folder moves whole, nothing in it names its own path."""
        if self.state_dir is None:
            raise KernelError(f"session {self.id} has no state folder to move")
        os.rename(self.state_dir, state_dir)
        self.state_dir = state_dir

    def detach(self) -> None:
        """Let go of the kernel without stopping it: it runs on under its monitor, and
        `Session.attach(state_dir)` takes it back (a persisted session only)."""
        if self._closed:
            return
        if self.state_dir is None:
            raise KernelError(f"session {self.id} has no state folder; shutdown() it instead")
        self._closed = True
        if self._kernel is not None:
            self._kernel.detach()
            self._kernel = None
        self._runtime.release()
        self._identity.forget()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ internals

    def _start_kernel(self) -> KernelProcess:
        kernel = KernelProcess.start(
            self.image,
            self.policy,
            self.workdir,
            self._runtime,
            env=self._env,
            identity=self._identity,
            binds=self._binds,
            runtime_name=self.runtime,
            keep=self.state_dir is not None,
            launched=self._launched if self.state_dir is not None else None,
        )
        self._kernel = kernel
        self._save()
        return kernel

    def _policy_json(self) -> dict[str, Any]:
        """The policy as `_save` writes it, dumped once per policy (twice per run otherwise)."""
        if self._policy_dump is None or self._policy_dump[0] is not self.policy:
            self._policy_dump = (self.policy, self.policy.model_dump(mode="json"))
        return self._policy_dump[1]

    def _launched(self, provisioner: KernelProvisioner) -> None:
        assert self.state_dir is not None
        session_state.save_launching(self.state_dir, provisioner.info())

    def _spools(self, kernel: KernelProcess) -> bool:
        """Whether the kernel's monitor spools runs (a persisted session, run locally)."""
        return self.state_dir is not None and isinstance(kernel.provisioner, LocalProvisioner)

    def _save_run(self, run: PendingRun | None) -> None:
        """Persist the run in flight (a persisted session), or that none is."""
        if self.state_dir is None or self._closed:
            return
        session_state.save_run(self.state_dir, run)

    def _save(self) -> None:
        """Persist what `attach` needs (a persisted session), with no run in flight."""
        if self.state_dir is None or self._closed:
            return
        session_state.save_run(self.state_dir, None)
        kernel = self._kernel
        state = session_state.SessionState(
            session_id=self.id,
            image=f"{self.image.name}@{self.image.digest}",
            policy=self._policy_json(),
            workdir=str(self.workdir),
            owns_workdir=self._owns_workdir,
            env=self._env,
            binds=session_state.bind_dicts(self._binds),
            output_limit=self.output_limit,
            runtime=self.runtime,
            identity_slot=self._identity.identity.slot,
            runtime_dir=str(self._runtime.host_dir),
            key=self._runtime.key,
            owner=self._runtime.owner,
            group=self._runtime.group,
            provisioner=kernel.provisioner.info() if kernel is not None else {},
            run=None,
        )
        session_state.save(self.state_dir, state)

    def _replace_kernel(self, *, graceful: bool = True) -> None:
        # A failed start leaves no kernel: the session is then dead (every run says why)
        # until a restart() succeeds.
        try:
            self._stop_kernel(graceful=graceful)
            self._kernel = self._start_kernel()
        except BaseException as exc:
            self._restart_failure = str(exc) or type(exc).__name__
            raise
        self._restart_failure = None

    def _restart_failed(self) -> KernelDied:
        why = self._restart_failure or "no kernel runs"
        return KernelDied(
            "restart_failed",
            f"no kernel runs: the last restart failed ({why}); restart() the session to try again",
        )

    def _stop_kernel(self, *, graceful: bool = True) -> None:
        kernel, self._kernel = self._kernel, None
        if kernel is not None:
            kernel.stop(graceful=graceful and kernel.poll() is None)

    def _live_kernel(self) -> KernelProcess:
        if self._kernel is None:
            if self._closed:
                raise KernelError(f"session {self.id} was shut down; start a new session")
            raise KernelError(self._restart_failed().message)
        ended = self._kernel.poll()
        if ended is not None:
            raise KernelError(f"the kernel died ({ended.message}); restart() the session")
        return self._kernel

    def _release_files(self) -> None:
        self._identity.release()
        self._runtime.remove()
        self._remove_own_workdir()
        if self.state_dir is not None:
            session_state.remove(self.state_dir)

    def _remove_own_workdir(self) -> None:
        if self._owns_workdir:
            shutil.rmtree(self.workdir.parent, ignore_errors=True)


def _clear(pending: "queue.Queue[str]") -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            pending.get_nowait()
