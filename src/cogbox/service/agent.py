"""The agent seam: what the manager asks of wherever its kernels run.

`Agent` is the protocol between the manager (auth, bookkeeping, APIs) and a node's kernels;
its values cross it as they are (in-process) or as JSON frames (agent/wire.py). No host path
crosses it: work dirs and storage folders are named, images are `name@digest`.
Implementations: `cogbox.agent.local.LocalAgent` (this host's jails), `agent.remote.RemoteAgent`
(a `cogbox agent` process, over its channel), `cluster.slurm_agent.SlurmAgent` (a Slurm job's
agent per session).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from cogbox.jail.policy import Policy
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import Event
from cogbox.kernel.files import FileEntry, NewFile, OpenFile
from cogbox.kernel.relay import KernelRelay

BuildProgress = Callable[[str], Awaitable[None]]
"""Told each step of an image build as it starts ("install Python packages")."""


class WorkdirGone(KernelError):
    """An ended session's kept work dir is no longer there (it was purged)."""


@dataclass(frozen=True)
class FolderBind:
    """A storage folder bound into a session's jail, by the folder's id: the agent finds its
    mounted filesystem in its own folders root (`<root>/<id>/mnt`), so no host path crosses
    the seam and the manager cannot name any other host folder."""

    folder: str
    destination: str
    readonly: bool = True
    give_to_jail: bool = False  # a read-write folder no other session holds: given to the jail


@dataclass(frozen=True)
class KernelSpec:
    """What a kernel needs to start: the session it serves, its image and /home/work (by
    name: the agent keeps work dirs in a folder of its own; no host path crosses the seam)."""

    session_id: str
    image: str  # name@sha256:<digest>, as prepare_image answered (a bare name: the newest)
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    memory_bytes: int | None = None  # its jail's memory limit; default: the image policy's
    folders: list[FolderBind] = field(default_factory=list)  # its storage folders
    cpus: float | None = None  # its jail's cpu quota in cores; default: the image policy's
    output_limit: int | None = None  # characters of one run sent to a client; default: kernel's
    # The agent writes all output to the session's full log (service.logs), up to this
    # many bytes; None: no log.
    log_limit: int | None = None
    runtime: str = "runc"  # the OCI runtime of its jail: runc, or runsc (gVisor)


@dataclass(frozen=True)
class KernelState:
    """Whether a kernel runs; once it ended, why (`reason` is the jail's ExitReason)."""

    alive: bool
    reason: str = ""
    message: str = ""
    limit_hit: bool = False
    # Its host is gone (a Slurm job that ended, a node that died): no restart can revive it.
    lost: bool = False


@dataclass(frozen=True)
class PoolState:
    """A warm pool: started kernels of `image` kept ready (`size`), `ready` of them now."""

    image: str
    size: int
    ready: int


@dataclass(frozen=True)
class Inventory:
    """What an agent holds: its sessions' kernels (live or dead)."""

    sessions: dict[str, KernelState]


@dataclass(frozen=True)
class BatchCommand:
    """Backend.AI's batch mode: an optional build command, then the exec command."""

    build: str | None
    exec: str


class Agent(Protocol):
    """Where kernels run. Every method may raise KernelError with a message for the user."""

    async def prepare_image(self, image: str, progress: BuildProgress) -> str:
        """Make sure a ready `image` exists where kernels run, building it from its recipe
        if needed (`progress` hears each build step; not called when no build is needed).
        Returns the ready version as `name@sha256:<digest>` (images/ref.py), what a
        KernelSpec names. Raises ImageNotFound when there is neither an image nor a recipe
        of that name."""
        ...

    async def memory_limit(self, image: str) -> int:
        """The memory limit of `image`'s own jail policy (its recipe's, if not built yet).
        Raises ImageNotFound when there is neither an image nor a recipe of that name."""
        ...

    async def image_policy(self, image: str) -> Policy:
        """`image`'s own jail policy (its recipe's, if not built yet); ImageNotFound as above."""
        ...

    async def open(self) -> None:
        """Get ready to start kernels (e.g. fill warm pools)."""
        ...

    def pools(self) -> list[PoolState]: ...

    async def start(self, spec: KernelSpec) -> str:
        """Start the session's kernel; returns the name of the work dir that holds its
        /home/work: `spec.workdir`, or that of a pre-started (pooled) kernel."""
        ...

    async def inventory(self) -> Inventory:
        """The sessions whose kernels this agent holds (live or dead), e.g. for a manager
        that restarted and re-attaches."""
        ...

    def execute(
        self,
        session_id: str,
        code: str | BatchCommand,
        timeout: float | None,
        run_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """The run's events; the agent owns the run (named `run_id`, made up if None), so
        it goes on if the caller goes away; closing the iterator early interrupts it. A
        caller that names the run acknowledges what it delivered (`ack`) so a successor can
        `resume` it; an unnamed run counts as delivered once its last event was read."""
        ...

    def resume(self, session_id: str, run_id: str) -> AsyncIterator[Event]:
        """The events of a run a previous caller left, from the last one it acknowledged
        (`ack`) to its end. KernelError if the agent holds no such run."""
        ...

    async def ack(self, session_id: str, run_id: str, delivered: int) -> None:
        """The caller delivered `delivered` more of the run's events to its client."""
        ...

    async def send_input(self, session_id: str, text: str) -> None: ...

    async def interrupt(self, session_id: str) -> None: ...

    async def restart(self, session_id: str) -> None: ...

    async def stop(self, session_id: str) -> None: ...

    def state(self, session_id: str) -> KernelState: ...

    async def create_file(self, session_id: str, path: str) -> NewFile:
        """A new file of /home/work to write in chunks (an upload), in place once committed."""
        ...

    async def open_file(self, session_id: str, path: str) -> OpenFile:
        """A regular file of /home/work opened to read in chunks (a download)."""
        ...

    async def list_files(self, session_id: str, path: str) -> list[FileEntry]: ...

    async def open_stored_file(self, workdir: str, path: str) -> OpenFile:
        """A file of an ended session's kept work dir (by name), same path rules."""
        ...

    async def list_stored_files(self, workdir: str, path: str) -> list[FileEntry]: ...

    async def remove_workdir(self, workdir: str) -> None:
        """Delete an ended session's kept work dir."""
        ...

    async def open_relay(self, session_id: str) -> KernelRelay:
        """A Jupyter client's own relay to the session's kernel (kernel/relay.py): the
        agent signs and checks, so no socket, path or key of the kernel reaches the manager.
        It stays valid across restarts of the kernel."""
        ...

    async def close(self) -> None: ...
