"""The manager's logic (SessionManager on a real SQLite database) with a FakeAgent at the
seam: limits, states, the reaper, re-attach at open, destroy, runs and files. No kernel, no
jail, no root: the fast tier."""

import asyncio
from pathlib import Path

import pytest

from cogbox.kernel.events import Error, Finished, KernelDied, Result, Stdout
from cogbox.kernel.files import UnsafePathError
from cogbox.service.errors import ServiceError
from cogbox.service.sessions import CreateRequest, SessionManager, read_chunks
from tests.fakes.agent import MIB, FakeAgent, fake_ref
from tests.fakes.manager import (
    collect,
    current,
    event_kinds,
    keypair,
    open_manager,
    run,
    service_config,
)


def _texts(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, Stdout))


def test_a_session_runs_and_keeps_its_variables_between_runs(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "work")
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager)
            record, created = await manager.create(owner, CreateRequest("python", name="calc"))
            assert created and record.status == "running"
            assert await event_kinds(manager, record) == ["created", "running"]
            await collect(manager, record, "x = 40")
            events = await collect(manager, record, "print(x + 2)\nx + 1")
            assert _texts(events) == "42\n"
            assert isinstance(events[-2], Result) and events[-2].data["text/plain"] == "41"
            assert isinstance(events[-1], Finished) and events[-1].status == "ok"
            again, created = await manager.create(
                owner, CreateRequest("python", name="calc", reuse_if_exists=True)
            )
            assert (again.id, created) == (record.id, False)
            with pytest.raises(ServiceError) as taken:
                await manager.create(owner, CreateRequest("python", name="calc"))
            assert taken.value.status == 409

    run(body)


def test_another_keypairs_session_is_not_found(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_manager(service_config(tmp_path), FakeAgent(tmp_path / "w")) as manager:
            alice, bob = keypair(manager), keypair(manager)
            record, _ = await manager.create(alice, CreateRequest("python", name="mine"))
            assert (await manager.find(alice, record.id)).id == record.id
            for ref in (record.id, "mine"):
                with pytest.raises(ServiceError) as hidden:
                    await manager.find(bob, ref)
                assert hidden.value.status == 404

    run(body)


def test_the_session_count_limit_is_a_429_naming_it_and_frees_on_destroy(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with open_manager(service_config(tmp_path), FakeAgent(tmp_path / "w")) as manager:
            owner = keypair(manager, max_sessions=2)
            first, _ = await manager.create(owner, CreateRequest("python"))
            await manager.create(owner, CreateRequest("python"))
            with pytest.raises(ServiceError) as refused:
                await manager.create(owner, CreateRequest("python"))
            error = refused.value
            assert (error.status, error.code) == (429, "too-many-sessions")
            assert "already has 2 active sessions" in error.message
            await manager.destroy(first)
            third, _ = await manager.create(owner, CreateRequest("python"))
            assert third.status == "running"

    run(body)


def test_the_memory_cap_is_a_429_naming_the_figures(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w", {"python": 256 * MIB})
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager, max_memory_bytes=600 * MIB)
            await manager.create(owner, CreateRequest("python"))
            await manager.create(owner, CreateRequest("python"))
            with pytest.raises(ServiceError) as refused:
                await manager.create(owner, CreateRequest("python"))
            error = refused.value
            assert (error.status, error.code) == (429, "memory-limit")
            for figure in ("600.0 MiB", "2 active sessions hold 512.0 MiB", "needs 256.0 MiB"):
                assert figure in error.message, error.message
            small, _ = await manager.create(owner, CreateRequest("python", memory_bytes=64 * MIB))
            assert small.memory_bytes == 64 * MIB

    run(body)


def test_concurrent_creates_cannot_both_pass_the_limit(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        agent.delay_start = 0.05  # both are `starting` at once
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager, max_sessions=1)
            results = await asyncio.gather(
                manager.create(owner, CreateRequest("python")),
                manager.create(owner, CreateRequest("python")),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, ServiceError)]
            assert len(refused) == 1 and refused[0].status == 429
            assert [c for c in agent.calls if c[0] == "start"].__len__() == 1

    run(body)


def test_a_kernel_that_fails_to_start_is_an_error_and_frees_its_room(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager, max_sessions=1)
            agent.fail_start = "runc failed"
            with pytest.raises(ServiceError) as failed:
                await manager.create(owner, CreateRequest("python", name="broken"))
            assert (failed.value.status, failed.value.code) == (503, "kernel-start-failed")
            assert "runc failed" in failed.value.message
            broken = await manager.find(owner, "broken")
            assert (broken.status, broken.status_info) == ("error", "start-failed")
            agent.fail_start = None
            record, _ = await manager.create(owner, CreateRequest("python"))
            assert record.status == "running"

    run(body)


def test_an_unknown_image_is_a_404_naming_the_known_ones(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w", {"python": 256 * MIB, "keras": MIB << 10})
        async with open_manager(service_config(tmp_path), agent) as manager:
            with pytest.raises(ServiceError) as missing:
                await manager.create(keypair(manager), CreateRequest("nope"))
            assert (missing.value.status, missing.value.code) == (404, "image-not-found")
            assert "keras, python" in missing.value.message
            assert not agent.kernels

    run(body)


def test_an_image_built_on_demand_records_its_steps_or_its_failure(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w", {"python": 256 * MIB, "keras": 256 * MIB})
        agent.unbuilt = {"python", "keras"}
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager)
            record, _ = await manager.create(owner, CreateRequest("python"))
            assert record.status == "running"
            kinds = await event_kinds(manager, record)
            assert kinds == ["created", "building", *["image_build"] * 2, "starting", "running"]
            steps = [e.message for e in await manager.events(record) if e.kind == "image_build"]
            assert steps == list(agent.build_steps)
            agent.build_error = "debootstrap: no network"
            with pytest.raises(ServiceError) as failed:
                await manager.create(owner, CreateRequest("keras", name="kerasbox"))
            assert (failed.value.status, failed.value.code) == (503, "image-build-failed")
            broken = await manager.find(owner, "kerasbox")
            assert (broken.status, broken.status_info) == ("error", "image-build-failed")

    run(body)


def test_a_kernel_that_dies_in_a_run_makes_the_session_dead_until_restarted(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with open_manager(service_config(tmp_path), FakeAgent(tmp_path / "w")) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            await collect(manager, record, "x = 1")
            events = await collect(manager, record, "print('before')\ndie('oom')")
            assert _texts(events) == "before\n"
            assert isinstance(events[-1], KernelDied) and events[-1].reason == "oom"
            dead = await current(manager, record)
            assert (dead.status, dead.status_info) == ("dead", "oom")
            assert "limit_hit" in await event_kinds(manager, record)
            assert not manager.kernel_alive(record)
            await manager.restart(dead)
            assert (await current(manager, record)).status == "running"
            after = await collect(manager, record, "x")
            assert isinstance(after[0], Error) and after[0].ename == "NameError"

    run(body)


def test_a_failed_restart_leaves_the_session_clearly_dead(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            agent.fail_restart = "no memory left"
            with pytest.raises(ServiceError) as failed:
                await manager.restart(record)
            assert failed.value.status == 409
            dead = await current(manager, record)
            assert (dead.status, dead.status_info) == ("dead", "restart-failed")
            with pytest.raises(ServiceError) as refused:
                await collect(manager, record, "x = 1")
            assert refused.value.status == 409 and "restart failed" in refused.value.message

    run(body)


def test_the_reaper_notices_a_kernel_that_died_between_runs(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            agent.kill(record.id, "pids", "killed: too many processes", limit_hit=False)
            await manager.reap()
            dead = await current(manager, record)
            assert (dead.status, dead.status_info) == ("dead", "pids")
            events = await manager.events(record)
            assert events[-1].kind == "died" and "too many processes" in events[-1].message

    run(body)


def test_the_idle_reaper_ends_an_idle_session_but_not_a_busy_one(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        config = service_config(tmp_path, reaper_interval=3600.0)
        async with open_manager(config, agent) as manager:
            owner = keypair(manager)
            idle, _ = await manager.create(owner, CreateRequest("python", idle_timeout=0.1))
            busy, _ = await manager.create(owner, CreateRequest("python", idle_timeout=0.1))
            runs = collect(manager, busy, "sleep(0.6)\nprint('done')")
            running = asyncio.create_task(runs)
            await asyncio.sleep(0.3)
            await manager.reap()
            ended = await current(manager, idle)
            assert (ended.status, ended.status_info) == ("terminated", "idle_timeout")
            assert "idle_reaped" in await event_kinds(manager, ended)
            assert (await current(manager, busy)).status == "running"
            assert _texts(await running) == "done\n"
            # its files are kept: the owner can still download them
            assert agent.calls.count(("remove_workdir", idle.id)) == 0

    run(body)


def test_the_lifetime_reaper_ends_even_a_busy_session_keeping_its_files(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager)
            record, _ = await manager.create(owner, CreateRequest("python", max_lifetime=0.2))
            await _upload(manager, record, "kept.txt", b"still here")
            running = asyncio.create_task(collect(manager, record, "sleep(30)"))
            await asyncio.sleep(0.3)
            await manager.reap()
            ended = await current(manager, record)
            assert (ended.status, ended.status_info) == ("terminated", "max_lifetime")
            assert ("stop", record.id) in agent.calls
            await asyncio.wait_for(running, 5)
            assert await _download(manager, ended, "kept.txt") == b"still here"

    run(body)


def test_open_reattaches_live_dead_and_lost_sessions(tmp_path: Path) -> None:
    """The agent outlives the manager: at the next open a kernel it still holds is running
    with its variables, one that died is dead with the jail's reason, one it lost is lost;
    a kernel the database does not hold as active is stopped."""

    async def body() -> None:
        config = service_config(tmp_path)
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(config, agent) as manager:
            owner = keypair(manager)
            live, _ = await manager.create(owner, CreateRequest("python", name="live"))
            died, _ = await manager.create(owner, CreateRequest("python", name="died"))
            lost, _ = await manager.create(owner, CreateRequest("python", name="lost"))
            gone, _ = await manager.create(owner, CreateRequest("python", name="gone"))
            await collect(manager, live, "x = 41")
        await asyncio.to_thread(manager.db.update_session, gone.id, status="terminated")
        agent.kill(died.id, "oom", "killed: out of memory (memory limit 256 MiB)")
        agent.forget(lost.id)
        async with open_manager(config, agent, manager.db) as again:
            assert (await current(again, live)).status == "running"
            assert "reattached" in await event_kinds(again, live)
            assert isinstance((await collect(again, live, "x + 1"))[0], Result)
            assert (await collect(again, live, "print(x + 1)"))[0] == Stdout("42\n")
            dead = await current(again, died)
            assert (dead.status, dead.status_info) == ("dead", "oom")
            assert "out of memory" in (await again.events(dead))[-1].message
            missing = await current(again, lost)
            assert (missing.status, missing.status_info) == ("lost", "service-restarted")
            assert ("stop", gone.id) in agent.calls
            assert gone.id not in agent.kernels

    run(body)


def test_reattach_after_the_agent_restarted(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager)
            kept, _ = await manager.create(owner, CreateRequest("python"))
            died, _ = await manager.create(owner, CreateRequest("python"))
            lost, _ = await manager.create(owner, CreateRequest("python"))
            agent.kill(died.id, "wall_time")
            agent.forget(lost.id)
            await manager.reattach()
            assert (await current(manager, kept)).status == "running"
            assert (await current(manager, died)).status_info == "wall_time"
            after = await current(manager, lost)
            assert (after.status, after.status_info) == ("lost", "agent-restarted")
            with pytest.raises(ServiceError) as refused:
                await collect(manager, after, "x = 1")
            assert refused.value.status == 409

    run(body)


def test_destroy_ends_the_kernel_and_deletes_its_files(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager)
            record, _ = await manager.create(owner, CreateRequest("python"))
            await _upload(manager, record, "a/b.txt", b"data")
            await manager.destroy(record)
            ended = await current(manager, record)
            assert (ended.status, ended.status_info) == ("terminated", "user")
            assert record.id not in agent.kernels
            assert "destroyed" in await event_kinds(manager, ended)
            with pytest.raises(ServiceError) as gone:
                await manager.list_files(ended, ".")
            assert gone.value.status == 404 and "files are gone" in gone.value.message
            with pytest.raises(ServiceError):
                await collect(manager, ended, "x = 1")

    run(body)


def test_runs_of_one_session_go_in_order(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_manager(service_config(tmp_path), FakeAgent(tmp_path / "w")) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            order: list[str] = []

            async def one(code: str) -> None:
                async for event in manager.execute(record, code):
                    if isinstance(event, Stdout):
                        order.append(event.text.strip())

            first = asyncio.create_task(one("sleep(0.2)\nprint('first')"))
            await asyncio.sleep(0.05)
            await one("print('second')")
            await first
            assert order == ["first", "second"]

    run(body)


def test_interrupt_and_time_limit_end_a_run(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_manager(service_config(tmp_path), FakeAgent(tmp_path / "w")) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            running = asyncio.create_task(collect(manager, record, "sleep(30)"))
            await asyncio.sleep(0.05)
            await manager.interrupt(record)
            events = await asyncio.wait_for(running, 5)
            assert isinstance(events[0], Error) and events[0].ename == "KeyboardInterrupt"
            timed = await collect(manager, record, "sleep(30)", timeout=0.1)
            assert isinstance(timed[-1], Finished) and timed[-1].status == "timeout"
            limits = [e for e in await manager.events(record) if e.kind == "limit_hit"]
            assert [e.reason for e in limits] == ["exec_timeout"]

    run(body)


def test_files_go_up_and_down_and_an_upload_past_its_limit_is_413(tmp_path: Path) -> None:
    async def body() -> None:
        async with open_manager(service_config(tmp_path), FakeAgent(tmp_path / "w")) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            await _upload(manager, record, "d/f.bin", b"x" * 1000)
            assert await _download(manager, record, "d/f.bin") == b"x" * 1000
            names = [entry.name for entry in await manager.list_files(record, "d")]
            assert names == ["f.bin"]
            with pytest.raises(ServiceError) as big:
                await _upload(manager, record, "big.bin", b"y" * 100, limit=10)
            assert big.value.status == 413
            with pytest.raises(UnsafePathError):  # the edge answers it 400 invalid-path
                await _upload(manager, record, "../x", b"")

    run(body)


def test_jobs_run_after_their_dependencies_and_a_failed_one_cancels_its_dependents(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with open_manager(service_config(tmp_path), FakeAgent(tmp_path / "w")) as manager:
            owner = keypair(manager)

            def job(name: str, command: str, *after: str) -> CreateRequest:
                return CreateRequest(
                    "python",
                    name=name,
                    session_type="batch",
                    startup_command=command,
                    dependencies=list(after),
                )

            first, _ = await manager.create(owner, job("first", "sleep 0.2; exit 0"))
            second, _ = await manager.create(owner, job("second", "echo hi", "first"))
            await manager.create(owner, job("failing", "exit 3"))
            never, _ = await manager.create(owner, job("never", "echo no", "failing"))
            assert second.status == "pending"
            await _until(manager, never, ("cancelled",))
            await _until(manager, second, ("terminated",))
            done = {r.name: r for r in await manager.list_sessions(owner)}
            assert (done["first"].result, done["second"].result) == ("SUCCESS", "SUCCESS")
            assert (done["failing"].result, done["failing"].exit_code) == ("FAILURE", 3)
            assert done["never"].result == "FAILURE"
            assert done["second"].created_at >= first.created_at
            started = [e.at for e in await manager.events(second) if e.kind == "starting"]
            ended = [e.at for e in await manager.events(first) if e.kind == "job_finished"]
            assert started and ended and started[0] >= ended[0]

    run(body)


def test_a_pending_job_destroyed_is_cancelled_and_never_starts(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent) as manager:
            owner = keypair(manager)
            blocker = CreateRequest(
                "python", name="blocker", session_type="batch", startup_command="sleep 5"
            )
            waiting = CreateRequest(
                "python",
                name="waiting",
                session_type="batch",
                startup_command="echo x",
                dependencies=["blocker"],
            )
            first, _ = await manager.create(owner, blocker)
            second, _ = await manager.create(owner, waiting)
            await manager.destroy(second)
            cancelled = await current(manager, second)
            assert (cancelled.status, cancelled.result) == ("cancelled", "FAILURE")
            await manager.destroy(await current(manager, first))
            assert ("start", second.id) not in agent.calls

    run(body)


def test_closing_the_manager_right_after_a_session_ended_does_not_hang(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent, settle=False) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            await manager.destroy(record)  # wakes the job scheduler; close() cancels it

    run(body, timeout=1.0)


async def _until(manager: SessionManager, record: object, statuses: tuple[str, ...]) -> None:
    for _ in range(200):
        if (await current(manager, record)).status in statuses:  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {statuses}")


async def _upload(
    manager: SessionManager, record: object, path: str, data: bytes, limit: int = 1 << 20
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield data

    await manager.upload(record, path, chunks(), limit)  # type: ignore[arg-type]


async def _download(manager: SessionManager, record: object, path: str) -> bytes:
    opened = await manager.open_file(record, path)  # type: ignore[arg-type]
    try:
        return b"".join([chunk async for chunk in read_chunks(opened, opened.size)])
    finally:
        opened.close()


def test_a_kernel_is_started_with_the_image_version_that_was_prepared(tmp_path: Path) -> None:
    async def body() -> None:
        agent = FakeAgent(tmp_path / "w")
        async with open_manager(service_config(tmp_path), agent) as manager:
            record, _ = await manager.create(keypair(manager), CreateRequest("python"))
            assert (record.image, agent.kernels[record.id].spec.image) == (
                "python",
                fake_ref("python"),
            )

    run(body)
