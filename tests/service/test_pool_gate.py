"""A cold start waiting for its turn takes the pooled kernel that became ready meanwhile.

A miss grows the pool, whose filler starts a kernel at once; a start queued behind the
cold-start gate that then started a kernel of its own would leave that one idle and pay
for two. The agent asks the pool again when the start's turn comes.
"""

import asyncio
import threading
import time
from pathlib import Path

import pytest

from cogbox.agent.local import LocalAgent
from cogbox.images.store import Image
from cogbox.kernel.pool import POOL_PREFIX
from cogbox.service.agent import KernelSpec
from tests.service.support import needs_runc


def test_a_start_queued_at_the_gate_takes_the_kernel_the_pool_made_meanwhile(
    python_image: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not needs_runc():
        pytest.skip("kernels need root and runc")
    monkeypatch.setenv("COGBOX_COLD_STARTS", "1")

    async def scenario() -> tuple[str, str, int]:
        agent = LocalAgent(workdirs=tmp_path / "sessions", pools={"python": 1})
        release = threading.Event()
        try:
            await agent.open()
            pool = agent._pools["python"]
            assert await asyncio.to_thread(pool.wait_ready, 60)
            first = await agent.start(KernelSpec("s1", "python", "s1"))
            # The gate's one slot is taken (a long cold start elsewhere).
            threading.Thread(target=agent._cold_starts.run, args=(release.wait,)).start()
            while agent._cold_starts.running < 1:
                await asyncio.sleep(0.01)
            second = asyncio.create_task(agent.start(KernelSpec("s2", "python", "s2")))
            deadline = time.monotonic() + 60
            while pool.ready_count < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            misses = pool.misses
            release.set()
            return first, await second, misses
        finally:
            release.set()
            await agent.close()

    first, second, misses = asyncio.run(scenario())
    assert first.startswith(POOL_PREFIX)
    assert misses == 1  # the second start found the pool empty and queued for a cold start
    assert second.startswith(POOL_PREFIX)
