"""Warm pool: kernels started ahead of time, each handed to exactly one caller."""

import time
from collections.abc import Iterator

import pytest

from cogbox.images.store import Image
from cogbox.kernel.errors import KernelError
from cogbox.kernel.pool import KernelPool
from tests.kernel.support import run, small_policy, stdout_of


@pytest.fixture(scope="module")
def pool(python_image: Image) -> Iterator[KernelPool]:
    with KernelPool(python_image, size=1, policy=small_policy()) as pool:
        assert pool.wait_ready(60)
        yield pool


def test_acquire_from_a_full_pool_returns_a_ready_session_at_once(pool: KernelPool) -> None:
    assert pool.wait_ready(60)
    started = time.monotonic()
    session = pool.acquire()
    took = time.monotonic() - started
    try:
        assert took < 0.1
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
