"""`FakeAgent`: the `Agent` protocol (cogbox.service.agent) entirely in memory, for the code
above the seam (the manager, the APIs), as httpx tests use a `MockTransport`.

Its kernels are NOT the real kernel: each keeps variables for a tiny language, one statement
a line (code that is none of these is a SyntaxError event):

    x = <expr>          assign; <expr> is a literal, a variable, or `a + b` / `a - b` / `a * b`
    print(<expr>)       stdout: the value and a newline
    <expr>              the run's Result (text/plain: its repr), when it is the last line
    lines(N)            stdout: N lines "line 1" .. "line N"
    sleep(S)            wait S seconds (an interrupt ends it with KeyboardInterrupt)
    input('prompt')     an InputRequest; the answer (send_input) is stdout
    die('reason')       the kernel dies with that reason (KernelDied)
    fail('text')        an uncaught RuntimeError

A batch command (BatchCommand.exec) speaks `echo WORDS`, `sleep S`, `exit N`, `;`-separated.
Tests steer it: `kill` (a kernel dies with a reason), `forget` (the agent lost a kernel),
`delay_start`/`fail_start`/`fail_restart`, and `calls` records what the manager asked.
Files go to real folders under `root` through cogbox.kernel.files (the proven-path helpers).
"""

import ast
import asyncio
import contextlib
import hashlib
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogbox.errors import CogboxError
from cogbox.images.store import ImageNotFound
from cogbox.jail.policy import Policy, default_policy
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import (
    Error,
    Event,
    Finished,
    InputRequest,
    KernelDied,
    Result,
    Stdout,
)
from cogbox.kernel.files import FileEntry, NewFile, OpenFile, list_dir, open_file
from cogbox.kernel.relay import KernelRelay
from cogbox.service.agent import (
    Agent,
    BatchCommand,
    BuildProgress,
    Inventory,
    KernelSpec,
    KernelState,
    PoolState,
    WorkdirGone,
)

MIB = 1 << 20


def policy_with_memory(memory_bytes: int) -> Policy:
    """The default jail policy with another memory limit (an image's own policy)."""
    policy = default_policy()
    limits = policy.limits.model_copy(update={"memory_bytes": memory_bytes})
    return policy.model_copy(update={"limits": limits})


def fake_ref(image: str) -> str:
    """The fake agent's `name@sha256:<digest>` of image `image` (a digest of its name)."""
    return f"{image}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


@dataclass
class FakeKernel:
    spec: KernelSpec
    variables: dict[str, Any] = field(default_factory=dict)
    state: KernelState = field(default_factory=lambda: KernelState(True))
    count: int = 0
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    died: asyncio.Event = field(default_factory=asyncio.Event)
    answers: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class FakeRun:
    session_id: str
    run_id: str
    events: list[Event] = field(default_factory=list)
    acked: int = 0
    done: bool = False
    error: BaseException | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: "asyncio.Task[None] | None" = None

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def follow(self, start: int) -> AsyncIterator[Event]:
        index = start
        while True:
            while index < len(self.events):
                index += 1
                yield self.events[index - 1]
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            self.changed.clear()
            await self.changed.wait()


class FakeAgent:
    """Kernels in memory. `images`: image name -> its memory limit (its jail policy);
    `unbuilt`: images that are built (with `build_steps`) on first `prepare_image`."""

    def __init__(
        self,
        root: Path,
        images: dict[str, int] | None = None,
        *,
        unbuilt: set[str] | None = None,
        build_steps: tuple[str, ...] = ("debootstrap", "install Python packages"),
    ) -> None:
        self.root = root
        self.images = dict(images if images is not None else {"python": 256 * MIB})
        self.unbuilt = set(unbuilt or ())
        self.build_steps = build_steps
        self.build_error: str | None = None
        self.kernels: dict[str, FakeKernel] = {}
        self.runs: dict[tuple[str, str], FakeRun] = {}
        self.calls: list[tuple[str, str]] = []  # (method, session id / image)
        self.delay_start = 0.0
        self.fail_start: str | None = None
        self.fail_restart: str | None = None
        self.opened = 0
        self.closed = 0

    # ------------------------------------------------------------------ steering (tests)

    def kill(
        self, session_id: str, reason: str = "oom", message: str = "", limit_hit: bool = True
    ) -> None:
        """The kernel's jail ends now (e.g. out of memory); a run in flight gets KernelDied."""
        kernel = self.kernels[session_id]
        kernel.state = KernelState(False, reason, message or f"killed: {reason}", limit_hit)
        kernel.died.set()

    def forget(self, session_id: str) -> None:
        """The agent no longer holds the kernel (it restarted and lost it)."""
        self.kernels.pop(session_id, None)

    # ------------------------------------------------------------------ images

    def _policy(self, image: str) -> Policy:
        if image not in self.images:
            known = ", ".join(sorted(self.images)) or "none"
            raise ImageNotFound(f"no image or recipe named {image!r}; known recipes: {known}")
        return policy_with_memory(self.images[image])

    async def prepare_image(self, image: str, progress: BuildProgress) -> str:
        self._policy(image)
        if image not in self.unbuilt:
            return fake_ref(image)
        self.calls.append(("build", image))
        for step in self.build_steps:
            await progress(step)
            await asyncio.sleep(0)
        if self.build_error is not None:
            raise CogboxError(self.build_error)
        self.unbuilt.discard(image)
        return fake_ref(image)

    async def memory_limit(self, image: str) -> int:
        return self._policy(image).limits.memory_bytes

    async def image_policy(self, image: str) -> Policy:
        return self._policy(image)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self.opened += 1

    def pools(self) -> list[PoolState]:
        return []

    async def start(self, spec: KernelSpec) -> str:
        self.calls.append(("start", spec.session_id))
        if self.delay_start:
            await asyncio.sleep(self.delay_start)
        if self.fail_start is not None:
            raise KernelError(self.fail_start)
        self._home(spec.workdir).mkdir(parents=True, exist_ok=True)
        self.kernels[spec.session_id] = FakeKernel(spec)
        return spec.workdir

    async def inventory(self) -> Inventory:
        return Inventory({sid: kernel.state for sid, kernel in self.kernels.items()})

    async def restart(self, session_id: str) -> None:
        kernel = self._kernel(session_id)
        self.calls.append(("restart", session_id))
        if self.fail_restart is not None:
            raise KernelError(self.fail_restart)
        self.kernels[session_id] = FakeKernel(kernel.spec)

    async def stop(self, session_id: str) -> None:
        self.calls.append(("stop", session_id))
        kernel = self.kernels.pop(session_id, None)
        if kernel is not None:
            kernel.interrupted.set()
        for key in [key for key in self.runs if key[0] == session_id]:
            self.runs.pop(key)

    def state(self, session_id: str) -> KernelState:
        kernel = self.kernels.get(session_id)
        return kernel.state if kernel else KernelState(False, "stopped", "not running")

    async def close(self) -> None:
        """Like a remote agent's: the manager lets go, the kernels live on in the agent."""
        self.closed += 1

    def _kernel(self, session_id: str) -> FakeKernel:
        kernel = self.kernels.get(session_id)
        if kernel is None:
            raise KernelError(f"no kernel runs for session {session_id}")
        return kernel

    # ------------------------------------------------------------------ runs

    async def execute(
        self,
        session_id: str,
        code: str | BatchCommand,
        timeout: float | None,
        run_id: str | None = None,
    ) -> AsyncIterator[Event]:
        kernel = self._kernel(session_id)
        run_id = run_id or secrets.token_hex(8)
        if (session_id, run_id) in self.runs:
            raise KernelError(f"run {run_id!r} already exists in session {session_id}")
        self.calls.append(("execute", session_id))
        run = FakeRun(session_id, run_id)
        self.runs[(session_id, run_id)] = run
        run.task = asyncio.create_task(self._drive(kernel, run, code, timeout))
        finished = False
        try:
            async for event in run.follow(0):
                yield event
                finished = isinstance(event, Finished | KernelDied)
        finally:
            if not finished and not run.done:
                kernel.interrupted.set()  # the caller went away: interrupt the code

    async def resume(self, session_id: str, run_id: str) -> AsyncIterator[Event]:
        run = self.runs.get((session_id, run_id))
        if run is None:
            raise KernelError(f"no run {run_id!r} is known in session {session_id}")
        async for event in run.follow(run.acked):
            yield event

    async def ack(self, session_id: str, run_id: str, delivered: int) -> None:
        run = self.runs.get((session_id, run_id))
        if run is not None:
            run.acked = min(len(run.events), run.acked + delivered)

    async def send_input(self, session_id: str, text: str) -> None:
        await self._kernel(session_id).answers.put(text)

    async def interrupt(self, session_id: str) -> None:
        self.calls.append(("interrupt", session_id))
        self._kernel(session_id).interrupted.set()

    async def _drive(
        self, kernel: FakeKernel, run: FakeRun, code: str | BatchCommand, timeout: float | None
    ) -> None:
        try:
            async with kernel.lock:  # a session's runs go one at a time, in order
                kernel.interrupted.clear()
                if not kernel.state.alive:
                    run.add(KernelDied(kernel.state.reason, kernel.state.message))
                    return
                body = self._batch(kernel, run, code) if isinstance(code, BatchCommand) else None
                work = body or self._interpret(kernel, run, str(code))
                try:
                    terminal = await asyncio.wait_for(self._until_death(kernel, work), timeout)
                except TimeoutError:
                    terminal = Finished("timeout", kernel.count, f"stopped after {timeout:g} s")
                run.add(terminal)
        except Exception as exc:
            run.error = exc
        finally:
            run.done = True
            run.changed.set()

    async def _until_death(self, kernel: FakeKernel, work: Any) -> Event:
        task = asyncio.ensure_future(work)
        death = asyncio.ensure_future(kernel.died.wait())
        await asyncio.wait({task, death}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            death.cancel()
            return task.result()  # type: ignore[no-any-return]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return KernelDied(kernel.state.reason, kernel.state.message, 137)

    async def _wait(self, kernel: FakeKernel, seconds: float) -> bool:
        """Sleep; False if an interrupt cut it short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(kernel.interrupted.wait(), seconds)
            return False
        return True

    async def _interpret(self, kernel: FakeKernel, run: FakeRun, code: str) -> Event:
        kernel.count += 1
        count = kernel.count
        lines = [line.strip() for line in code.splitlines() if line.strip()]
        for index, line in enumerate(lines):
            try:
                outcome = await self._statement(kernel, run, line, last=index == len(lines) - 1)
            except _Raised as exc:
                run.add(Error(exc.ename, exc.evalue, [f"{exc.ename}: {exc.evalue}"]))
                return Finished("error", count)
            if outcome is not None:
                return outcome
        return Finished("ok", count)

    async def _statement(
        self, kernel: FakeKernel, run: FakeRun, line: str, *, last: bool
    ) -> Event | None:
        try:
            tree = ast.parse(line, mode="exec").body
        except SyntaxError as exc:
            raise _Raised("SyntaxError", str(exc.msg)) from exc
        if len(tree) != 1:
            raise _Raised("SyntaxError", "one statement a line")
        node = tree[0]
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if not isinstance(target, ast.Name):
                raise _Raised("SyntaxError", "assign to a name")
            kernel.variables[target.id] = _value(kernel, node.value)
            return None
        if not isinstance(node, ast.Expr):
            raise _Raised("SyntaxError", f"not in the fake language: {line!r}")
        call = node.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
            args = [_value(kernel, arg) for arg in call.args]
            name = call.func.id
            if name == "print":
                run.add(Stdout(" ".join(map(str, args)) + "\n"))
                return None
            if name == "lines":
                for n in range(1, int(args[0]) + 1):
                    run.add(Stdout(f"line {n}\n"))
                return None
            if name == "sleep":
                if not await self._wait(kernel, float(args[0])):
                    raise _Raised("KeyboardInterrupt", "")
                return None
            if name == "input":
                run.add(InputRequest(str(args[0]) if args else ""))
                run.add(Stdout(await kernel.answers.get() + "\n"))
                return None
            if name == "die":
                reason = str(args[0])
                kernel.state = KernelState(False, reason, f"killed: {reason}", True)
                return KernelDied(reason, kernel.state.message, 137)
            if name == "fail":
                raise _Raised("RuntimeError", str(args[0]))
        value = _value(kernel, call)
        if last:
            run.add(Result({"text/plain": repr(value)}, kernel.count))
        return None

    def _batch(self, kernel: FakeKernel, run: FakeRun, command: BatchCommand) -> Any:
        async def body() -> Event:
            for part in (command.exec or "").split(";"):
                word, _, rest = part.strip().partition(" ")
                if word == "echo":
                    run.add(Stdout(rest + "\n"))
                elif word == "sleep" and not await self._wait(kernel, float(rest)):
                    return Finished("error", None, "interrupted", 130)
                elif word == "exit" and int(rest) != 0:
                    message = f"the exec command exited with status {int(rest)}"
                    return Finished("error", None, message, int(rest))
            return Finished("ok", None, "", 0)

        return body()

    # ------------------------------------------------------------------ files

    def _home(self, workdir: str) -> Path:
        if not workdir or "/" in workdir or workdir.startswith("."):
            raise KernelError(f"invalid work dir name {workdir!r}")
        return self.root / workdir / "home"

    def _live_home(self, session_id: str) -> Path:
        return self._home(self._kernel(session_id).spec.workdir)

    async def create_file(self, session_id: str, path: str) -> NewFile:
        return NewFile(self._live_home(session_id), path)

    async def open_file(self, session_id: str, path: str) -> OpenFile:
        return open_file(self._live_home(session_id), path)

    async def list_files(self, session_id: str, path: str) -> list[FileEntry]:
        return list_dir(self._live_home(session_id), path)

    def _stored(self, workdir: str) -> Path:
        home = self._home(workdir)
        if not home.is_dir():
            raise WorkdirGone(f"the files of work dir {workdir} are gone")
        return home

    async def open_stored_file(self, workdir: str, path: str) -> OpenFile:
        return open_file(self._stored(workdir), path)

    async def list_stored_files(self, workdir: str, path: str) -> list[FileEntry]:
        return list_dir(self._stored(workdir), path)

    async def remove_workdir(self, workdir: str) -> None:
        self.calls.append(("remove_workdir", workdir))
        shutil.rmtree(self._home(workdir).parent, ignore_errors=True)

    async def open_relay(self, session_id: str) -> KernelRelay:
        self._kernel(session_id)
        raise KernelError(
            "the fake agent relays no Jupyter messages (tests/kernel/test_relay_fast)"
        )


class _Raised(Exception):
    def __init__(self, ename: str, evalue: str) -> None:
        super().__init__(ename, evalue)
        self.ename = ename
        self.evalue = evalue


def _value(kernel: FakeKernel, node: ast.expr) -> Any:
    """A literal, a variable, or + - * of those: nothing else is evaluated."""
    if isinstance(node, ast.Name):
        if node.id not in kernel.variables:
            raise _Raised("NameError", f"name {node.id!r} is not defined")
        return kernel.variables[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
        left, right = _value(kernel, node.left), _value(kernel, node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        return left - right if isinstance(node.op, ast.Sub) else left * right
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise _Raised("SyntaxError", "not in the fake language") from exc


def _conforms(agent: FakeAgent) -> Agent:
    return agent  # mypy checks that FakeAgent implements the Agent protocol
