"""The manager with an agent that queues starts, as SlurmAgent does (fast tier, no cluster):
a create answers with the session pending and Slurm's reason instead of hanging, destroying
it cancels the queued start and leaves it terminated, and a kernel whose host is gone makes
the session lost rather than dead."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from cogbox.kernel.errors import KernelError
from cogbox.service.agent import KernelSpec, KernelState
from cogbox.service.sessions import CreateRequest
from cogbox.service.status import SessionStatus
from tests.fakes.agent import FakeAgent
from tests.fakes.manager import current, keypair, open_manager, run, service_config


class QueueingAgent(FakeAgent):
    """Starts wait `pending` (reason Resources, told like SlurmAgent tells it) until placed."""

    start_wait_s = 1.0  # long enough for the pending status to be written under load

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.placed = asyncio.Event()
        self.cancelled: set[str] = set()
        self.on_status: Callable[[str, SessionStatus, str, str], Awaitable[None]] | None = None

    async def start(self, spec: KernelSpec) -> str:
        assert self.on_status is not None
        await self.on_status(
            spec.session_id, SessionStatus.PENDING, "Resources", "waiting for Slurm"
        )
        while not self.placed.is_set():
            if spec.session_id in self.cancelled:
                raise KernelError("cancelled while pending")
            await asyncio.sleep(0.01)
        return await super().start(spec)

    async def stop(self, session_id: str) -> None:
        self.cancelled.add(session_id)
        await super().stop(session_id)


def test_a_create_the_agent_cannot_place_yet_answers_pending_with_its_reason(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        agent = QueueingAgent(tmp_path)
        async with open_manager(service_config(tmp_path), agent) as manager:
            agent.on_status = manager.set_status
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            assert (record.status, record.status_info) == ("pending", "Resources")
            agent.placed.set()
            for _ in range(200):
                if (await current(manager, record)).status == "running":
                    break
                await asyncio.sleep(0.01)
            assert (await current(manager, record)).status == "running"

    run(body)


def test_destroying_a_pending_session_cancels_its_start_and_leaves_it_terminated(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        agent = QueueingAgent(tmp_path)
        async with open_manager(service_config(tmp_path), agent) as manager:
            agent.on_status = manager.set_status
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            await manager.destroy(await current(manager, record))
            await asyncio.sleep(0.1)  # the cancelled start ends meanwhile
            assert ("stop", record.id) in agent.calls
            assert (await current(manager, record)).status == "terminated"

    run(body)


def test_a_kernel_whose_host_is_gone_makes_its_session_lost_with_the_reason(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path)
        async with open_manager(service_config(tmp_path), agent) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            message = "node node2 of Slurm job 7 is NOT_RESPONDING"
            agent.kernels[record.id].state = KernelState(False, "node-failed", message, lost=True)
            await manager.reap()
            ended = await current(manager, record)
            assert (ended.status, ended.status_info) == ("lost", "node-failed")

    run(body)
