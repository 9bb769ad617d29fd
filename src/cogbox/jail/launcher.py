"""Run a command of an image inside the jail through runc, with a `subprocess.Popen`-like API.

    jail = Jail()
    jail.start(JailSpec(image, policy, ["python3", "-c", "print(1)"]), stdout=PIPE)
    out = jail.stdout.read(); exit = jail.wait()   # JailExit(returncode, reason, message)
    jail.cleanup()

Each jail gets a bundle (`<data>/run/jails/<id>/config.json`, rendered by `render_oci_spec`
and written unchanged; see bundle.py), an entry in runc's own state dir (`<data>/run/runc`),
its own cgroups (see cgroups.py), and a /home/work bound from a host directory (workdir.py).
`runc run` runs in the foreground without a terminal, so the container's stdio is the
caller's pipes, and runc's exit status is the command's (128 + N when killed by signal N).
Only fds 0-2 reach the container: Popen closes every other fd before runc starts, and
runc's init closes any it inherited above 2.

The jail's PID 1 is tini (the host's `/usr/bin/tini-static`, bound read-only at `JAIL_INIT`),
not the command; see init.py for why.

A jail dies with the process that drives it: runc starts under `setpriv --pdeathsig KILL`
from one thread that lives as long as the process (spawner.py), and tini (`-p SIGKILL`) dies
with runc. A kernel's driver is its own monitor process (cogbox.kernel.monitor), so the
kernel outlives whoever started it; a one-shot `run_jailed` is driven by its caller. The
bundle directory stays flock()ed by the driver; `reap_stale_jails` (reaper.py) removes what
a dead driver left (container, cgroups, loop mount, bundle), never a live monitor's, and
runs once per process.

Limits and who enforces them:
    memory, pids   cgroups of the launcher's parent cgroup        -> OOM, PIDS_LIMIT
    cpus           runc's cpu cgroup quota                        -> (throttled, no exit)
    cpu time       RLIMIT_CPU (SIGXCPU, then SIGKILL)             -> CPU_TIME
    file size      RLIMIT_FSIZE (SIGXFSZ / EFBIG)                 -> FILE_SIZE
    /home/work     ext4 image of the quota's size                 -> DISK_QUOTA
    /tmp, /dev/shm tmpfs size=                                    -> DISK_QUOTA (from stderr)
    wall time      watchdog thread here: `runc kill KILL`         -> WALL_TIME
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cogbox.config import data_dir
from cogbox.images.paths import WORKDIR
from cogbox.images.store import Image
from cogbox.jail.bundle import (
    check_reachable,
    make_bundle,
    make_mount_points,
    open_to_mapped_root,
    state_dirs,
    write_driver_record,
)
from cogbox.jail.cgroups import DEFAULT_ROOT, CgroupCounters, CgroupError, JailCgroup
from cogbox.jail.chmod_guard import ChmodGuard
from cogbox.jail.errors import JailError
from cogbox.jail.exit_reason import Evidence, ExitReason, JailExit, explain
from cogbox.jail.folder_owner import give_folder
from cogbox.jail.gpu import DRIVER_DIR, NoGpuError, NvidiaHost, driver_folder, require_gpus
from cogbox.jail.identity import Identity, IdentityError, IdentityLease, allocate
from cogbox.jail.init import check_init
from cogbox.jail.oci import DEFAULT_ENV, Bind, jail_env, render_oci_spec
from cogbox.jail.policy import Policy
from cogbox.jail.reaper import reap_once
from cogbox.jail.runtimes import RUNTIMES, runtime_command
from cogbox.jail.spawner import spawn
from cogbox.jail.workdir import Workdir, WorkdirError

__all__ = [
    "DEVNULL",
    "PIPE",
    "RUNTIMES",
    "ExitReason",
    "Jail",
    "JailError",
    "JailExit",
    "JailResult",
    "JailSpec",
    "run_jailed",
]

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_START_POLL_SECONDS = 0.002
_START_TIMEOUT_SECONDS = 60.0
_STDERR_TAIL_BYTES = 4096
DEFAULT_OUTPUT_LIMIT = 64 << 20

# Under runsc the jail's pids cgroup holds gVisor's sandbox too: its Sentry and gofer (about
# 45 host threads on 2 cores when idle, more with more cores) and the host threads that carry
# the jail's own tasks; a cntk kernel's first computation peaked at 192 there (pids limit 32
# under runc). The limit gets this much on top: still a hard bound on what a jail takes.
RUNSC_PIDS_HEADROOM = 256 + 16 * (os.cpu_count() or 1)


@dataclass
class JailSpec:
    """What to run, where and under which policy."""

    image: Image
    policy: Policy
    argv: list[str]
    workdir: Path | None = None  # host dir bound at /home/work; a fresh temp dir if None
    env: dict[str, str] = field(default_factory=dict)  # requested env, filtered by jail_env
    binds: list[Bind] = field(default_factory=list)  # extra binds (never /home/work)
    name: str | None = None  # a readable part of the jail id
    # The host ids the jail runs as (its session's, held by the session); None: the jail
    # takes a transient one for its own lifetime.
    identity: Identity | None = None


@dataclass(frozen=True)
class JailResult:
    """Output and exit of a command run to completion by `run_jailed`."""

    stdout: bytes
    stderr: bytes
    exit: JailExit
    truncated: bool = False  # output beyond `output_limit` was discarded


class Jail:
    """One jailed process, shaped like `subprocess.Popen` (and jupyter_client's provisioners).

    `runtime` is "runc" (default) or "runsc" (gVisor: a user-space kernel, a stronger
    boundary at a cost in start time and syscall speed). `cgroup_root` exists for tests.
    """

    def __init__(
        self,
        *,
        runtime: str = "runc",
        state_dir: Path | None = None,
        cgroup_root: Path = DEFAULT_ROOT,
        owner_pid: int | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise JailError(f"unknown jail runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        if shutil.which(runtime) is None:
            raise JailError(f"{runtime} is not installed (Debian: apt-get install {runtime})")
        self.runtime = runtime
        # Who the jail works for, in its driver record: a kernel monitor's starter.
        self.owner_pid = owner_pid or os.getpid()
        self.state_dir = state_dir
        self.runtime_root, self.jails_dir = state_dirs(state_dir)
        self.cgroup_root = cgroup_root
        self.id = ""
        self.bundle: Path | None = None
        self.stdin: IO[bytes] | None = None
        self.stdout: IO[bytes] | None = None
        self.stderr: IO[bytes] | None = None
        self.pid: int | None = None  # the container's init, as the host sees it
        self._spec: JailSpec | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._cgroup: JailCgroup | None = None
        self._workdir: Workdir | None = None
        self._chmod_guard: ChmodGuard | None = None
        self._watchdog: threading.Timer | None = None
        self._wall_limit: float | None = None
        self._wall_expired = False
        self._killed_by_caller = False
        self._exit: JailExit | None = None
        self._finish_lock = threading.Lock()
        self._stderr_tail = b""
        self._cleaned = False
        self._bundle_lock: int | None = None  # flock()ed fd of the bundle: "driver alive"
        self._image_hold: IO[str] | None = None  # keeps a rebuild from deleting the image
        self._own_identity: IdentityLease | None = None  # transient: released at cleanup
        self.identity: Identity | None = None

    # ------------------------------------------------------------------ starting

    def start(
        self,
        spec: JailSpec,
        *,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        wall_time_seconds: float | None = None,
    ) -> None:
        """Set the jail up and start `spec.argv` in it; returns once the command is running.

        stdin/stdout/stderr take what Popen takes (PIPE, DEVNULL, a file, None = inherit).
        `wall_time_seconds` tightens the policy's wall time limit for this run.
        Raises JailError (naming what failed) if the jail cannot be set up or started.
        """
        if self._process is not None:
            raise JailError(f"jail {self.id} was already started")
        if not spec.argv:
            raise JailError("nothing to run: argv is empty")
        if spec.policy.forks_allowed:
            check_init(spec.image, spec.policy)
        reap_once(self.state_dir, self.cgroup_root)
        self._spec = spec
        self.id = _jail_id(spec.name)
        limits = spec.policy.limits
        walls = [w for w in (limits.wall_time_seconds, wall_time_seconds) if w is not None]
        self._wall_limit = min(walls) if walls else None
        try:
            self._hold_image(spec.image)
            self._prepare(spec)
            self._launch(stdin, stdout, stderr)
        except BaseException:
            self.cleanup()
            raise

    def _hold_image(self, image: Image) -> None:
        try:
            self._image_hold = image.hold()
        except OSError as exc:
            raise JailError(
                f"image {image.name!r} ({image.digest[:12]}) is gone ({exc.strerror}); "
                f"build it again with `cogbox image build {image.name}`"
            ) from exc

    def _prepare(self, spec: JailSpec) -> None:
        self.runtime_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.jails_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.bundle, self._bundle_lock = make_bundle(
            self.jails_dir,
            self.id,
            {"pid": os.getpid(), "owner": self.owner_pid, "runtime": self.runtime},
        )
        identity = self.identity = self._take_identity(spec)
        open_to_mapped_root(self.jails_dir, self.bundle, identity)
        limits = spec.policy.limits
        try:
            self._workdir = Workdir.prepare(
                spec.workdir, limits.workdir_quota_bytes, self.bundle, owner=identity
            )
        except (WorkdirError, OSError) as exc:
            raise JailError(f"cannot prepare /home/work: {exc}") from exc
        # For the reaper: where /home/work goes back to if this driver dies, and whose it is.
        workdir_home = None if self._workdir.owned else str(self._workdir.host_dir)
        write_driver_record(
            self.bundle,
            {
                "pid": os.getpid(),
                "owner": self.owner_pid,
                "runtime": self.runtime,
                "workdir": workdir_home,
                "identity": identity.slot,
            },
        )
        try:
            self._cgroup = JailCgroup(self.id, root=self.cgroup_root)
            pids = limits.pids
            if pids is not None and self.runtime == "runsc":
                pids += RUNSC_PIDS_HEADROOM  # gVisor's own threads count on this cgroup too
            self._cgroup.create(memory_bytes=limits.memory_bytes, pids=pids, cpus=limits.cpus)
        except (CgroupError, OSError) as exc:
            raise JailError(f"cannot set up the jail's cgroups: {exc}") from exc
        binds = [Bind(self._workdir.source, WORKDIR, readonly=False), *spec.binds]
        try:
            for bind in spec.binds:
                if bind.give_to_jail:
                    give_folder(bind.source, identity)
        except OSError as exc:
            raise JailError(f"cannot give a mounted folder to the jail: {exc}") from exc
        gpus = self._gpus(spec.policy)
        if gpus is not None:
            try:
                driver = driver_folder(gpus, data_dir())
            except OSError as exc:
                raise JailError(f"cannot copy the GPU driver's libraries: {exc}") from exc
            binds.append(Bind(driver, DRIVER_DIR, readonly=True, always_exec=True))
        listener = self._start_chmod_guard(spec.policy)
        try:
            config = render_oci_spec(
                spec.policy,
                rootfs=spec.image.rootfs,
                args=list(spec.argv),
                env=jail_env(spec.policy, spec.image.env, {**DEFAULT_ENV, **spec.env}),
                binds=binds,
                cgroups_path=self._cgroup.runc_path,
                seccomp_listener=listener,
                identity=identity,
                runtime=self.runtime,
                init=True,
                gpus=gpus,
                limits_on_parent_cgroup=True,
            )
        except ValueError as exc:
            raise JailError(f"cannot build the jail's OCI config: {exc}") from exc
        make_mount_points(spec.image.rootfs, config["mounts"])
        if self.runtime == "runsc":
            check_reachable(config["mounts"], identity)
        (self.bundle / "config.json").write_text(json.dumps(config, indent=1))

    def _take_identity(self, spec: JailSpec) -> Identity:
        if spec.identity is not None:
            return spec.identity
        try:
            self._own_identity = allocate()  # the host's slots, whatever the state dir
        except (IdentityError, OSError) as exc:
            raise JailError(f"cannot give the jail a host identity: {exc}") from exc
        return self._own_identity.identity

    def _gpus(self, policy: Policy) -> NvidiaHost | None:
        """The host's GPUs if the policy asks for them; JailError naming why not."""
        if not policy.gpu:
            return None
        if self.runtime == "runsc":
            raise JailError("gpu: true needs runc: gVisor (runsc) is not given the host's GPUs")
        try:
            return require_gpus()
        except NoGpuError as exc:
            raise JailError(str(exc)) from exc

    def _start_chmod_guard(self, policy: Policy) -> str | None:
        # OP_CHMOD narrower than "*": a supervisor thread answers each chmod by its globs
        # (seccomp user notification, chmod_guard.py). It must listen before runc starts.
        # runsc does not hand over seccomp listeners; there ownership alone decides.
        if policy.chmod_globs is None or self.runtime != "runc":
            return None
        assert self.bundle is not None
        self._chmod_guard = ChmodGuard(self.bundle, policy.chmod_globs)
        try:
            self._chmod_guard.start()
        except OSError as exc:
            raise JailError(f"cannot start the chmod guard: {exc}") from exc
        return str(self._chmod_guard.socket_path)

    def _launch(
        self,
        stdin: int | IO[Any] | None,
        stdout: int | IO[Any] | None,
        stderr: int | IO[Any] | None,
    ) -> None:
        assert self.bundle is not None
        pid_file = self.bundle / "init.pid"
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise JailError("setpriv is not installed (Debian: apt-get install util-linux)")
        command = [
            # runc dies with this process (the jail then dies with runc, see init.INIT_ARGS).
            setpriv, "--pdeathsig", "KILL", "--",
            *self._runtime_command(),
            "run",
            "--bundle", str(self.bundle),
            "--pid-file", str(pid_file),
            # Session keyrings are not namespaced: never share the host's. (gVisor has no
            # host keyring to share, and no such flag.)
            *(["--no-new-keyring"] if self.runtime == "runc" else []),
            self.id,
        ]  # fmt: skip
        # close_fds (the default) keeps every host fd but 0-2 away from runc and the jail;
        # a new session keeps a terminal's Ctrl-C from reaching runc directly.
        self._process = spawn(
            lambda: subprocess.Popen(
                command,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                close_fds=True,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            )
        )
        self.stdin, self.stdout, self.stderr = (
            self._process.stdin,
            self._process.stdout,
            self._process.stderr,
        )
        if self._wall_limit is not None:
            self._watchdog = threading.Timer(self._wall_limit, self._wall_time_expired)
            self._watchdog.daemon = True
            self._watchdog.start()
        self._wait_started(pid_file)

    def _runtime_command(self) -> list[str]:
        assert self.bundle is not None and self._spec is not None
        network = self._spec.policy.network
        return runtime_command(self.runtime, self.runtime_root, self.bundle, network)

    def _wait_started(self, pid_file: Path) -> None:
        # runc writes the pid file once the command runs; if runc exits first, the start
        # failed (bad config, missing program) and its log says why.
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if pid_file.exists():
                with contextlib.suppress(OSError, ValueError):
                    self.pid = int(pid_file.read_text())
                    return
            if self._process.poll() is not None:
                if pid_file.exists():
                    return
                raise JailError(
                    f"the jail did not start ({self.runtime} exit status "
                    f"{self._process.returncode}): {self._runtime_error()}"
                )
            time.sleep(_START_POLL_SECONDS)
        raise JailError(f"the jail did not start within {_START_TIMEOUT_SECONDS:g} s")

    def _runtime_error(self) -> str:
        assert self.bundle is not None
        messages: list[str] = []
        with contextlib.suppress(OSError):
            for line in (self.bundle / "runtime.log").read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("level") in ("error", "fatal"):
                        messages.append(str(entry.get("msg", "")).strip())
        return messages[-1] if messages else "no error was logged"

    # ------------------------------------------------------------------ Popen-like

    @property
    def exit(self) -> JailExit | None:
        """How the command ended, once it has (after poll() or wait() saw it)."""
        return self._exit

    @property
    def returncode(self) -> int | None:
        return None if self._exit is None else self._exit.returncode

    @property
    def workdir_view(self) -> Path | None:
        """Where the host sees the jail's /home/work right now (the live quota mount)."""
        return None if self._workdir is None else self._workdir.source

    def poll(self) -> JailExit | None:
        """The exit if the command has ended, else None; never blocks."""
        if self._process is None or self._process.poll() is None:
            return self._exit
        return self._finish()

    def wait(self, timeout: float | None = None) -> JailExit:
        """Wait for the command to end; raises subprocess.TimeoutExpired after `timeout`."""
        if self._process is None:
            raise JailError("the jail was never started")
        self._process.wait(timeout)
        return self._finish()

    def communicate(
        self,
        input: bytes | None = None,
        *,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> tuple[bytes, bytes, bool]:
        """Feed `input`, read stdout/stderr to the end (each capped at `output_limit` bytes).

        Returns (stdout, stderr, truncated). Output past the cap is read and thrown away, so
        a flood can neither block the jail nor fill the host's memory.
        """
        if self._process is None:
            raise JailError("the jail was never started")
        readers: list[threading.Thread] = []
        results: dict[str, tuple[bytes, bool]] = {}
        for key, stream in (("stdout", self.stdout), ("stderr", self.stderr)):
            if stream is not None:
                thread = threading.Thread(
                    target=_drain, args=(stream, output_limit, results, key), daemon=True
                )
                thread.start()
                readers.append(thread)
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                if input:
                    self.stdin.write(input)
                self.stdin.close()
        for thread in readers:
            thread.join()
        out, out_cut = results.get("stdout", (b"", False))
        err, err_cut = results.get("stderr", (b"", False))
        self._stderr_tail = err[-_STDERR_TAIL_BYTES:]
        return out, err, out_cut or err_cut

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the jail's init, which passes it on to the command's process group."""
        if self._process is None or self._process.poll() is not None:
            return
        subprocess.run(
            [*self._runtime_command(), "kill", self.id, str(int(sig))],
            capture_output=True,
            check=False,
        )

    def kill(self) -> None:
        """Kill the command and everything it started; the exit reason is KILLED."""
        self._killed_by_caller = True
        self._kill_container()

    def _wall_time_expired(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._wall_expired = True
            self._kill_container()

    def _kill_container(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        result = subprocess.run(
            [*self._runtime_command(), "kill", self.id, "KILL"],
            capture_output=True,
            check=False,
        )
        # Not created yet, or runc is stuck: the cgroups hold every process of the jail.
        if result.returncode != 0 and self._cgroup is not None:
            self._cgroup.kill_all()

    # ------------------------------------------------------------------ ending

    def _finish(self) -> JailExit:
        with self._finish_lock:
            if self._exit is not None:
                return self._exit
            assert self._process is not None and self._spec is not None
            if self._watchdog is not None:
                self._watchdog.cancel()
            returncode = self._process.returncode
            evidence = Evidence(
                counters=_safe_counters(self._cgroup),
                wall_time_expired=self._wall_limit if self._wall_expired else None,
                killed_by_caller=self._killed_by_caller,
                workdir_full=self._workdir.is_full() if self._workdir is not None else False,
                stderr_tail=self._stderr_tail,
            )
            self._exit = explain(returncode, self._spec.policy.limits, evidence)
            return self._exit

    def cleanup(self) -> None:
        """Kill what is left, delete the container, its cgroups, bundle and temp workdir.

        Copies /home/work back to the host directory when a quota filesystem was used.
        Safe to call more than once, and after a failed start.
        """
        if self._cleaned:
            return
        self._cleaned = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        errors: list[str] = []
        if self._process is not None:
            if self._process.poll() is None:
                self._killed_by_caller = self._exit is None
                self._kill_container()
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._finish()
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self.bundle is not None:
            subprocess.run(
                [*self._runtime_command(), "delete", "--force", self.id],
                capture_output=True,
                check=False,
            )
        if self._cgroup is not None:
            self._cgroup.kill_all()
            self._cgroup.remove()
        if self._chmod_guard is not None:
            self._chmod_guard.stop()
        if self._workdir is not None:
            try:
                self._workdir.close()
            except (WorkdirError, OSError) as exc:
                errors.append(f"cannot save /home/work to {self._workdir.host_dir}: {exc}")
        # A quota mount that did not unmount stays, and so does its bundle (rmtree would
        # descend into the mount); with the lock released, reap_stale_jails retries it.
        if self.bundle is not None and not os.path.ismount(self.bundle / "workdir"):
            shutil.rmtree(self.bundle, ignore_errors=True)
        if self._bundle_lock is not None:
            os.close(self._bundle_lock)
            self._bundle_lock = None
        if self._image_hold is not None:
            self._image_hold.close()
            self._image_hold = None
        # Last: no process of the jail is left (its cgroups were killed) to share the ids.
        if self._own_identity is not None:
            self._own_identity.release()
            self._own_identity = None
        if errors:
            raise JailError("; ".join(errors))

    def __enter__(self) -> "Jail":
        return self

    def __exit__(self, *_: object) -> None:
        self.cleanup()


def run_jailed(
    spec: JailSpec,
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    runtime: str = "runc",
) -> JailResult:
    """Run `spec` to completion and return its output and exit; always cleans up.

    `timeout` (seconds) acts like a tighter wall time limit: the jail is killed and the exit
    reason is WALL_TIME. Never hangs on a jail that ignores its input or output.
    """
    jail = Jail(runtime=runtime)
    try:
        jail.start(
            spec,
            stdin=PIPE if input is not None else DEVNULL,
            stdout=PIPE,
            stderr=PIPE,
            wall_time_seconds=timeout,
        )
        stdout, stderr, truncated = jail.communicate(input, output_limit=output_limit)
        exit = jail.wait()
    finally:
        jail.cleanup()
    return JailResult(stdout=stdout, stderr=stderr, exit=exit, truncated=truncated)


def _jail_id(name: str | None) -> str:
    suffix = uuid.uuid4().hex[:16]
    if not name:
        return f"cogbox-{suffix}"
    return f"cogbox-{_NAME_UNSAFE.sub('-', name)[:40].strip('-.')}-{suffix}"


def _safe_counters(cgroup: JailCgroup | None) -> CgroupCounters | None:
    if cgroup is None:
        return None
    try:
        return cgroup.counters()
    except OSError:
        return None


def _drain(stream: IO[bytes], limit: int, results: dict[str, tuple[bytes, bool]], key: str) -> None:
    chunks: list[bytes] = []
    kept = 0
    truncated = False
    while True:
        try:
            chunk = stream.read1(1 << 16) if hasattr(stream, "read1") else stream.read(1 << 16)
        except (OSError, ValueError):
            break
        if not chunk:
            break
        if kept < limit:
            piece = chunk[: limit - kept]
            chunks.append(piece)
            kept += len(piece)
            truncated = truncated or len(piece) < len(chunk)
        else:
            truncated = True
    results[key] = (b"".join(chunks), truncated)
