"""Warm pool: kernels started ahead of time, each handed to exactly one caller."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.cgroups import detect_version
from cogbox.kernel.errors import KernelError
from cogbox.kernel.events import Finished
from cogbox.kernel.pool import KernelPool, preload_code
from cogbox.kernel.session import Session
from tests.kernel.support import run, small_policy, stdout_of


@pytest.fixture(scope="module")
def pool(python_image: Image) -> Iterator[KernelPool]:
    with KernelPool(python_image, size=1, policy=small_policy()) as pool:
        assert pool.wait_ready(60)
        yield pool


def test_acquire_from_a_full_pool_returns_a_session_started_before(pool: KernelPool) -> None:
    assert pool.wait_ready(60)
    waiting = [s.id for s in pool._ready]
    session = pool.acquire()
    try:
        assert session.id in waiting
        assert stdout_of(run(session, "print('warm')")) == "warm\n"
    finally:
        session.shutdown()


def test_a_kernel_is_never_handed_out_twice(pool: KernelPool) -> None:
    first = pool.acquire()
    second = pool.acquire()  # the pool had to start a new one
    try:
        run(first, "secret = 'first caller'")
        events = run(second, "print(secret)")
        assert first.id != second.id and "NameError" in str(events)
    finally:
        first.shutdown()
        second.shutdown()


def cpu_weight(session: Session) -> int:
    """The weight of the session's jail in the host's cpu cgroups, in hundredths of a task."""
    assert session._kernel is not None
    jail = session._kernel.provisioner.jail_id
    if detect_version() == 2:
        return int(Path("/sys/fs/cgroup/cogbox", jail, "cpu.weight").read_text())
    return round(
        100 * int(Path("/sys/fs/cgroup/cpu/cogbox", jail, "cpu.shares").read_text()) / 1024
    )


def test_a_waiting_kernel_has_the_lowest_cpu_weight_and_its_taker_the_policys(
    pool: KernelPool,
) -> None:
    # Idle in the pool it must not add to what the jails weigh together (cgroups.py).
    assert pool.wait_ready(60)
    waiting = pool._ready[0]
    assert cpu_weight(waiting) <= 1
    session = pool.acquire()
    try:
        assert session is waiting
        assert cpu_weight(session) == round(100 * (pool.policy.limits.cpus or 1.0))
    finally:
        session.shutdown()


def test_pool_refills_in_the_background(pool: KernelPool) -> None:
    pool.acquire().shutdown()
    assert pool.wait_ready(60) and pool.ready_count == 1


def test_closed_pool_shuts_its_idle_kernels_and_refuses(python_image: Image) -> None:
    pool = KernelPool(python_image, size=1, policy=small_policy())
    assert pool.wait_ready(60)
    idle = list(pool._ready)
    pool.close()
    assert [s.alive for s in idle] == [False]
    with pytest.raises(KernelError, match="closed"):
        pool.acquire()


def test_warmup_code_runs_before_a_kernel_is_handed_out(python_image: Image) -> None:
    with KernelPool(
        python_image, size=1, policy=small_policy(), warmup="__import__('json')"
    ) as pool:
        session = pool.acquire()
        try:
            events = run(session, "import sys; print('json' in sys.modules, 'json' in dir())")
            assert stdout_of(events) == "True False\n"
        finally:
            session.shutdown()


def test_try_acquire_never_waits(python_image: Image) -> None:
    with KernelPool(python_image, size=1, policy=small_policy()) as pool:
        early = pool.try_acquire()  # a kernel takes far longer to start than this call
        assert pool.wait_ready(60)
        session = pool.try_acquire()
        try:
            assert early is None and session is not None and session.alive
        finally:
            if session is not None:
                session.shutdown()


def test_warmup_is_not_in_the_execution_history(python_image: Image) -> None:
    with KernelPool(python_image, size=1, policy=small_policy(), warmup="x = 1") as pool:
        session = pool.acquire()
        try:
            last = run(session, "print('first')")[-1]
            assert isinstance(last, Finished) and last.execution_count == 1
        finally:
            session.shutdown()


def test_with_workdirs_the_caller_keeps_its_folder_and_the_pool_removes_the_rest(
    python_image: Image, tmp_path: Path
) -> None:
    pool = KernelPool(python_image, size=1, policy=small_policy(), workdirs=tmp_path)
    try:
        session = pool.acquire()
        run(session, "open('kept.txt', 'w').write('mine')")
        session.shutdown()
        assert pool.wait_ready(60)
    finally:
        pool.close()
    assert session.workdir.parent.parent == tmp_path
    assert session.workdir.parent.name.startswith("pool-")
    assert list(tmp_path.iterdir()) == [session.workdir.parent]
    assert (session.workdir / "kept.txt").read_text() == "mine"


def test_the_images_recipe_names_what_pooled_kernels_preload(
    python_image: Image, cntk_image: Image
) -> None:
    assert (preload_code(python_image), preload_code(cntk_image)) == ("", "__import__('cntk')")


def test_a_kernel_waiting_past_max_age_is_replaced_by_a_fresh_one(python_image: Image) -> None:
    with KernelPool(python_image, size=1, policy=small_policy(), max_age=1.0) as pool:
        assert pool.wait_ready(60)
        first = pool._ready[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not pool._ready or pool._ready[0] is first):
            time.sleep(0.1)
        assert not first.alive
        assert pool.wait_ready(60) and pool._ready[0] is not first


def test_a_pool_grows_on_a_miss_and_shrinks_back_once_quiet(python_image: Image) -> None:
    with KernelPool(
        python_image, size=1, policy=small_policy(), max_size=2, shrink_after=2.0
    ) as pool:
        assert pool.wait_ready(60)
        first = pool.try_acquire()
        missed = pool.try_acquire()  # its replacement is still starting: a miss
        try:
            assert first is not None and missed is None
            assert (pool.misses, pool.size, pool.base_size) == (1, 2, 1)
            assert pool.wait_ready(60) and pool.ready_count == 2
            deadline = time.monotonic() + 30
            while pool.size > 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert pool.size == 1
            deadline = time.monotonic() + 10
            while pool.ready_count > 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert pool.ready_count == 1  # the surplus kernel was shut down
        finally:
            if first is not None:
                first.shutdown()
