"""`SlurmAgent`: the `Agent` protocol with each session's kernel placed by Slurm.

batchspawner's shape: `start` submits one batch job per session (`session_job`) whose script
runs `cogbox agent --listen tcp://<node>:0` in a folder of the service's on the filesystem
the nodes share; the agent publishes `agent.address` (host, port, its certificate's SHA-256)
there, the manager proves that file is a private regular file in a folder it owns, dials it
with the certificate pinned and the session's agent key, and routes the session's calls to
that `RemoteAgent`. The jail nests under the job's cgroup (jail/cgroups.py), so `--mem`
binds the jailed code. While Slurm has not placed the job the session is `pending` with
Slurm's reason (told through `on_status`), never an error; `stop` is `scancel`; a job that
ended or a node that stopped responding makes the session `lost` with the reason (a watcher
asks Slurm every `poll_s`). Images are prepared here, in the shared image store, and named
by digest; a node's agent refuses another version. Files of ended sessions and image
policies are read here too, from the shared folders (a LocalAgent that runs no kernel).

A restarted manager re-attaches to its sessions' running jobs (their agents kept the kernels);
a job still pending when it died is cancelled and its session reported lost. Not done: warm
pools on nodes.
"""

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cogbox.agent.channel import AgentPlace
from cogbox.agent.errors import AgentAuthError, ChannelError
from cogbox.agent.local import LocalAgent
from cogbox.agent.relay import RemoteRelay
from cogbox.agent.remote import RemoteAgent
from cogbox.agent.tls import AgentAddress, published
from cogbox.cluster.session_job import JOB_PREFIX, JobPlace, Placement, judge, session_job
from cogbox.cluster.slurm import Job, Node, SlurmClient, SlurmError, SlurmUnavailable
from cogbox.jail.policy import Policy
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import Event
from cogbox.kernel.files import FileEntry, NewFile, OpenFile
from cogbox.service.agent import (
    BatchCommand,
    BuildProgress,
    Inventory,
    KernelSpec,
    KernelState,
    PoolState,
)
from cogbox.service.config import ServiceConfig
from cogbox.service.status import SessionStatus

log = logging.getLogger(__name__)
POLL_S = 1.0
FAST_POLL_FOR_S = 5.0  # after a submission, squeue every 0.2 s this long, then every poll_s
AGENT_START_TIMEOUT_S = 120.0  # from the job running to its agent answering
StatusTold = Callable[[str, SessionStatus, str, str], Awaitable[None]]
"""(session id, status, reason, message): the manager's `set_status`."""


class SlurmStartError(KernelError):
    """The session's job ended, or its agent never answered, before the kernel started."""


@dataclass
class _Placed:
    """One session's job and, once its agent answered, the channel to it."""

    session_id: str
    job_id: str
    place: AgentPlace
    remote: RemoteAgent | None = None
    node: str | None = None
    lost: KernelState | None = None
    stopped: bool = False
    told: str = ""  # the last pending reason told, so each is told once
    ending: asyncio.Task[None] | None = field(default=None, repr=False)


class SlurmAgent:
    """Sessions as Slurm jobs of `client`'s cluster; `state_dir` (0700, the service's) holds
    one agent folder per session and must be on the filesystem the nodes share, like
    `sessions_dir` and `logs_dir` (batchspawner's requirement too)."""

    def __init__(
        self,
        client: SlurmClient,
        *,
        state_dir: Path,
        sessions_dir: Path,
        logs_dir: Path,
        vfolders_dir: Path,
        manager_host: str,
        env: Mapping[str, str],
        partition: str | None = None,
        time_limit_s: int | None = None,
        start_wait_s: float = 30.0,
        poll_s: float = POLL_S,
    ) -> None:
        self._client = client
        self._state_dir = state_dir
        self._sessions_dir = sessions_dir
        self._logs_dir = logs_dir
        self._vfolders_dir = vfolders_dir
        self._manager_host = manager_host
        self._env = dict(env)
        self._partition = partition
        self._time_limit_s = time_limit_s
        self._poll_s = poll_s
        # How long a create waits for Slurm before it answers with the session `pending`.
        self.start_wait_s = start_wait_s
        self.on_status: StatusTold | None = None
        self._local = LocalAgent(pools={}, workdirs=sessions_dir, logs_dir=logs_dir)
        self._placed: dict[str, _Placed] = {}
        self._watcher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the service's side

    async def open(self) -> None:
        """Make the state folder; re-attach to the running jobs a previous manager of it left
        (their agents kept the kernels: the manager re-attaches their sessions), cancel the
        others (a job still pending, or whose agent does not answer: their sessions are
        reported lost); watch the placed sessions' jobs."""
        await asyncio.to_thread(_own_private_folder, self._state_dir, create=True)
        with contextlib.suppress(SlurmUnavailable):
            for job in (await asyncio.to_thread(self._client.jobs)).values():
                mine = job.name.startswith(JOB_PREFIX)
                sid = job.name.removeprefix(JOB_PREFIX)
                folder = self._state_dir / sid
                if not mine or job.finished or not folder.is_dir():
                    continue
                if job.state == "RUNNING" and await self._reattach(sid, job):
                    continue
                log.info("cancelling Slurm job %s a previous manager left", job.job_id)
                with contextlib.suppress(SlurmError):
                    await asyncio.to_thread(self._client.cancel, job.job_id)
        self._watcher = asyncio.create_task(self._watch_forever())

    async def _reattach(self, sid: str, job: Job) -> bool:
        """Dial the agent of a running job a previous manager placed; True if it answered
        with the session's kernel (its address and key proven as at the start)."""
        place = AgentPlace(self._state_dir / sid)
        try:
            address = await asyncio.to_thread(self._address, place)
            if address is None:
                return False
            key = await asyncio.to_thread(place.key)
            remote = RemoteAgent(address, key, shutdown_on_close=True)
            await remote.open()
        except (OSError, ChannelError, TimeoutError) as exc:
            log.warning("the agent of Slurm job %s did not answer: %s", job.job_id, exc)
            return False
        held = await remote.inventory()
        if sid not in held.sessions:
            await remote.close()
            return False
        node = job.nodes[0] if job.nodes else None
        self._placed[sid] = _Placed(sid, job.job_id, place, remote=remote, node=node)
        log.info("re-attached session %s: Slurm job %s on %s", sid, job.job_id, node)
        return True

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        await asyncio.gather(*(self.stop(sid) for sid in list(self._placed)))
        await self._local.close()

    def pools(self) -> list[PoolState]:
        return []  # each job holds one session; no warm pool on nodes yet

    async def prepare_image(self, image: str, progress: BuildProgress) -> str:
        return await self._local.prepare_image(image, progress)

    async def memory_limit(self, image: str) -> int:
        return await self._local.memory_limit(image)

    async def image_policy(self, image: str) -> Policy:
        return await self._local.image_policy(image)

    # ------------------------------------------------------------------ placing a session

    async def start(self, spec: KernelSpec) -> str:
        """Submit the session's job, wait (pending, telling Slurm's reason) until Slurm runs
        it and its agent answers, and start the kernel there."""
        sid = spec.session_id
        place = AgentPlace(self._state_dir / sid)
        key = await asyncio.to_thread(place.key)  # the folder 0700, the key 0600, made now
        request = session_job(
            sid,
            JobPlace(
                place.folder,
                self._sessions_dir,
                self._logs_dir,
                self._vfolders_dir,
                sys.executable,
                self._manager_host,
                self._env,
            ),
            memory_bytes=spec.memory_bytes,
            cpus=spec.cpus,
            time_limit_s=self._time_limit_s,
            partition=self._partition,
        )
        job_id = await asyncio.to_thread(self._client.submit, request)
        placed = self._placed[sid] = _Placed(sid, job_id, place)
        log.info("session %s is Slurm job %s", sid, job_id)
        try:
            address = await self._await_agent(placed)
            remote = RemoteAgent(address, key, shutdown_on_close=True)
            await remote.open()
            placed.remote = remote
            if placed.stopped:
                raise SlurmStartError(f"session {sid} was destroyed while it started")
            return await remote.start(spec)
        except BaseException:
            await self._end(placed)
            if self._placed.get(sid) is placed:
                del self._placed[sid]
            raise  # its folder is kept: the agent's log there says why it did not start

    async def _await_agent(self, placed: _Placed) -> AgentAddress:
        loop = asyncio.get_running_loop()
        submitted = loop.time()
        started_at: float | None = None
        while True:
            if placed.stopped:
                raise SlurmStartError(f"session {placed.session_id} was destroyed while pending")
            try:
                jobs = await asyncio.to_thread(self._client.jobs)
            except SlurmUnavailable as exc:
                log.warning("Slurm did not answer about job %s: %s", placed.job_id, exc)
                await asyncio.sleep(self._poll_s)
                continue
            verdict = judge(placed.job_id, jobs.get(placed.job_id), {})
            if verdict.kind == "lost":
                raise SlurmStartError(f"the session did not start: {verdict.message}")
            if verdict.kind == "pending":
                if verdict.reason != placed.told:
                    placed.told = verdict.reason
                    await self._tell(
                        placed.session_id, SessionStatus.PENDING, verdict.reason, verdict.message
                    )
            else:
                if started_at is None:
                    started_at = loop.time()
                    placed.node = verdict.node
                    await self._tell(
                        placed.session_id, SessionStatus.STARTING, "placed", verdict.message
                    )
                address = await asyncio.to_thread(self._address, placed.place)
                if address is not None:
                    return address
                if loop.time() - started_at > AGENT_START_TIMEOUT_S:
                    raise SlurmStartError(
                        f"the agent of Slurm job {placed.job_id} on {placed.node} did not "
                        f"answer in {AGENT_START_TIMEOUT_S:g} s"
                    )
            # Slurm places a job on its next scheduling tick (about 1 s): ask often at first
            waited = loop.time() - submitted
            pending_poll = self._poll_s if waited > FAST_POLL_FOR_S else min(0.2, self._poll_s)
            await asyncio.sleep(pending_poll if verdict.kind == "pending" else 0.1)

    def _address(self, place: AgentPlace) -> AgentAddress | None:
        """The address the job's agent published, once it did; proven first to be a private
        regular file (tls.published) in a 0700 folder of this user, in a state folder of
        this user no one else can write."""
        _own_private_folder(self._state_dir)
        _own_private_folder(place.folder)
        try:
            return published(place)
        except ChannelError:
            return None  # not published yet

    async def _tell(
        self, session_id: str, status: SessionStatus, reason: str, message: str
    ) -> None:
        if self.on_status is not None:
            await self.on_status(session_id, status, reason, message)

    # ------------------------------------------------------------------ ending and losing

    async def stop(self, session_id: str) -> None:
        """Stop the kernel and its agent (the job then completes), and scancel the job,
        pending or running."""
        placed = self._placed.pop(session_id, None)
        if placed is None:
            return
        placed.stopped = True
        await self._end(placed)
        await self._forget(placed)

    async def _forget(self, placed: _Placed) -> None:
        """Remove the session's agent folder (its key, certificate, the agent's log)."""
        await asyncio.to_thread(shutil.rmtree, placed.place.folder, True)

    async def _end(self, placed: _Placed) -> None:
        remote, placed.remote = placed.remote, None
        if remote is not None:
            with contextlib.suppress(Exception):
                if remote.connected and placed.lost is None:
                    await remote.stop(placed.session_id)
            with contextlib.suppress(Exception):
                await remote.close()  # tells the agent to shut down
        try:
            await asyncio.to_thread(self._client.cancel, placed.job_id)
        except SlurmError as exc:
            log.warning("scancel of job %s: %s", placed.job_id, exc)

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self._watch()
            except SlurmUnavailable as exc:
                log.warning("Slurm did not answer; sessions keep their state: %s", exc)
            except Exception:
                log.exception("watching the sessions' Slurm jobs failed; retrying")

    async def _watch(self) -> None:
        """Mark lost the sessions whose job ended, whose node is unhealthy or whose agent's
        channel broke; their agent is told to stop and the job cancelled."""
        running = [p for p in self._placed.values() if p.remote is not None and p.lost is None]
        if not running:
            return
        jobs: dict[str, Job] = await asyncio.to_thread(self._client.jobs)
        nodes: dict[str, Node] = await asyncio.to_thread(self._client.nodes)
        for placed in running:
            verdict = judge(placed.job_id, jobs.get(placed.job_id), nodes)
            if verdict.kind != "lost" and placed.remote is not None and not placed.remote.connected:
                verdict = Placement(
                    "lost",
                    "agent-unreachable",
                    f"the connection to the agent of Slurm job {placed.job_id} on "
                    f"{placed.node} broke",
                    placed.node,
                )
            if verdict.kind == "lost":
                log.warning("session %s lost: %s", placed.session_id, verdict.message)
                placed.lost = KernelState(False, verdict.reason, verdict.message, lost=True)
                placed.ending = asyncio.create_task(self._end(placed))

    # ------------------------------------------------------------------ per-session calls

    def _remote(self, session_id: str) -> RemoteAgent:
        placed = self._placed.get(session_id)
        if placed is not None and placed.lost is not None:
            raise KernelError(placed.lost.message)
        if placed is None or placed.remote is None:
            raise KernelError(f"no kernel runs for session {session_id}")
        return placed.remote

    def state(self, session_id: str) -> KernelState:
        placed = self._placed.get(session_id)
        if placed is None:
            return KernelState(False, "stopped", "the kernel is not running")
        if placed.lost is not None:
            return placed.lost
        if placed.remote is None:
            return KernelState(False, "starting", "the session's Slurm job is not running yet")
        return placed.remote.state(session_id)

    async def inventory(self) -> Inventory:
        return Inventory({sid: self.state(sid) for sid, p in self._placed.items() if p.remote})

    def execute(
        self,
        session_id: str,
        code: str | BatchCommand,
        timeout: float | None,
        run_id: str | None = None,
    ) -> AsyncIterator[Event]:
        return self._remote(session_id).execute(session_id, code, timeout, run_id)

    def resume(self, session_id: str, run_id: str) -> AsyncIterator[Event]:
        return self._remote(session_id).resume(session_id, run_id)

    async def ack(self, session_id: str, run_id: str, delivered: int) -> None:
        await self._remote(session_id).ack(session_id, run_id, delivered)

    async def send_input(self, session_id: str, text: str) -> None:
        await self._remote(session_id).send_input(session_id, text)

    async def interrupt(self, session_id: str) -> None:
        await self._remote(session_id).interrupt(session_id)

    async def restart(self, session_id: str) -> None:
        await self._remote(session_id).restart(session_id)

    async def create_file(self, session_id: str, path: str) -> NewFile:
        return await self._remote(session_id).create_file(session_id, path)

    async def open_file(self, session_id: str, path: str) -> OpenFile:
        return await self._remote(session_id).open_file(session_id, path)

    async def list_files(self, session_id: str, path: str) -> list[FileEntry]:
        return await self._remote(session_id).list_files(session_id, path)

    async def open_stored_file(self, workdir: str, path: str) -> OpenFile:
        return await self._local.open_stored_file(workdir, path)

    async def list_stored_files(self, workdir: str, path: str) -> list[FileEntry]:
        return await self._local.list_stored_files(workdir, path)

    async def remove_workdir(self, workdir: str) -> None:
        await self._local.remove_workdir(workdir)

    async def open_relay(self, session_id: str) -> RemoteRelay:
        return await self._remote(session_id).open_relay(session_id)


def _own_private_folder(folder: Path, *, create: bool = False) -> None:
    """AgentAuthError unless `folder` is a real folder (not a link) of this user that no one
    else can write: what the manager reads from there is then what it or its jobs wrote."""
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise AgentAuthError(f"{folder} is not a private folder of this user")


def slurm_agent(config: ServiceConfig) -> SlurmAgent:
    """`cogbox serve --backend slurm`'s agent: the cluster of SLURM_CONF, its state beside
    the service's agent folder, nodes using this process's data dir (the shared store)."""
    from cogbox.config import data_dir

    env = {"COGBOX_DATA_DIR": str(data_dir())}
    if "PYTHONPATH" in os.environ:  # a checkout's cogbox, for development
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    manager_host = config.slurm_manager_host or socket.gethostbyname(socket.gethostname())
    if ipaddress.ip_address(socket.gethostbyname(manager_host)).is_loopback:
        # a node's route to its own loopback: its agent would listen where no manager is
        raise SlurmError(
            f"this host's name resolves to {manager_host}, a loopback address: give "
            "--slurm-manager-host, an address of this machine the nodes route to"
        )
    lifetime = int(config.max_lifetime) + 60  # the manager ends it first, then Slurm would
    return SlurmAgent(
        SlurmClient(),
        state_dir=config.agent_dir.with_name("slurm"),
        sessions_dir=config.sessions_dir,
        logs_dir=config.logs_dir,
        vfolders_dir=config.vfolders_dir,
        manager_host=manager_host,
        env=env,
        partition=config.slurm_partition,
        time_limit_s=lifetime,
        start_wait_s=config.slurm_start_wait,
    )
