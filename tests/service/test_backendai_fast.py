"""The Backend.AI adapter (service/backendai.py) through the whole aiohttp app, in process,
with a FakeAgent at the seam: signed requests, create, query/continue/input runs by runId,
destroy, and the 4xx bodies. No kernel, no jail, no root: the fast tier."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from cogbox.service.app import create_app
from cogbox.service.db import Database, KeypairRecord
from cogbox.service.keypairs import create_keypair
from cogbox.service.signing import signed_headers
from tests.fakes.agent import MIB, FakeAgent
from tests.fakes.manager import run, service_config


class Api:
    """Signed Backend.AI calls as one keypair, to an app served in this process."""

    def __init__(self, client: TestClient, pair: KeypairRecord) -> None:
        self.client = client
        self.pair = pair

    async def call(
        self, method: str, path: str, body: object = None, *, secret: str | None = None
    ) -> tuple[int, Any]:
        host = f"{self.client.host}:{self.client.port}"
        headers = signed_headers(
            access_key=self.pair.access_key,
            secret_key=secret or self.pair.secret_key,
            method=method,
            path_with_query=path,
            host=host,
        )
        data = None if body is None else json.dumps(body)
        response = await self.client.request(method, path, data=data, headers=headers)
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


@asynccontextmanager
async def serving(
    directory: Path, agent: FakeAgent, **limits: Any
) -> AsyncIterator[tuple[Api, FakeAgent]]:
    config = service_config(directory, query_wait=0.2)
    db = Database(config.database_url)
    pair = create_keypair(db, **limits)
    app = create_app(config, db=db, agent=agent)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, pair), agent


def served(
    test: Callable[[Api, FakeAgent], Awaitable[None]], tmp_path: Path, **limits: Any
) -> None:
    async def body() -> None:
        async with serving(tmp_path, FakeAgent(tmp_path / "work"), **limits) as (api, agent):
            await test(api, agent)

    run(body)


def _stdout(result: dict[str, Any]) -> str:
    return "".join(item[1] for item in result["console"] if item[0] == "stdout")


def test_create_then_query_runs_keep_variables(tmp_path: Path) -> None:
    async def test(api: Api, agent: FakeAgent) -> None:
        status, created = await api.call("POST", "/session", {"lang": "python", "name": "calc"})
        assert status == 201, created
        assert (created["sessionName"], created["status"], created["created"]) == (
            "calc",
            "RUNNING",
            True,
        )
        assert created["sessionId"] in agent.kernels
        status, again = await api.call("POST", "/session", {"lang": "python", "name": "calc"})
        assert (status, again["sessionId"], again["created"]) == (200, created["sessionId"], False)
        query = {"mode": "query", "code": "x = 6", "runId": "r1"}
        status, first = await api.call("POST", "/session/calc", query)
        assert (status, first["result"]["status"]) == (200, "finished")
        query = {"mode": "query", "code": "print(x * 7)", "runId": "r2"}
        status, second = await api.call("POST", "/session/calc", query)
        assert second["result"]["runId"] == "r2"
        assert _stdout(second["result"]) == "42\n"
        status, info = await api.call("GET", "/session/calc")
        assert status == 200 and info["status"] == "RUNNING"

    served(test, tmp_path)


def test_a_slow_run_is_continued_by_its_run_id(tmp_path: Path) -> None:
    async def test(api: Api, agent: FakeAgent) -> None:
        await api.call("POST", "/session", {"lang": "python", "name": "slow"})
        code = "print('start')\nsleep(0.6)\nprint('end')"
        _, first = await api.call("POST", "/session/slow", {"mode": "query", "code": code})
        result = first["result"]
        assert result["status"] == "continued" and _stdout(result) == "start\n"
        seen = _stdout(result)
        for _ in range(20):
            body = {"mode": "continue", "code": "", "runId": result["runId"]}
            status, later = await api.call("POST", "/session/slow", body)
            assert status == 200, later
            seen += _stdout(later["result"])
            if later["result"]["status"] == "finished":
                break
        assert seen == "start\nend\n"  # nothing twice, nothing lost

    served(test, tmp_path)


def test_input_is_answered_by_an_input_call(tmp_path: Path) -> None:
    async def test(api: Api, agent: FakeAgent) -> None:
        await api.call("POST", "/session", {"lang": "python", "name": "askme"})
        query = {"mode": "query", "code": "input('name? ')", "runId": "q"}
        _, asked = await api.call("POST", "/session/askme", query)
        assert asked["result"]["status"] == "waiting-input"
        answer = {"mode": "input", "code": "bob", "runId": "q"}
        _, answered = await api.call("POST", "/session/askme", answer)
        assert answered["result"]["status"] == "finished"
        assert _stdout(answered["result"]) == "bob\n"

    served(test, tmp_path)


def test_a_dead_kernel_shows_as_error_and_destroy_terminates(tmp_path: Path) -> None:
    async def test(api: Api, agent: FakeAgent) -> None:
        _, created = await api.call("POST", "/session", {"lang": "python", "name": "doomed"})
        query = {"mode": "query", "code": "die('oom')", "runId": "d"}
        _, died = await api.call("POST", "/session/doomed", query)
        assert died["result"]["status"] == "finished"
        _, info = await api.call("GET", "/session/doomed")
        assert info["status"] == "ERROR"
        status, _ = await api.call("DELETE", "/session/doomed")
        assert status == 200
        _, info = await api.call("GET", "/session/doomed")
        assert info["status"] == "TERMINATED"
        assert created["sessionId"] not in agent.kernels

    served(test, tmp_path)


def test_bad_requests_are_4xx_bodies_naming_the_problem(tmp_path: Path) -> None:
    async def test(api: Api, agent: FakeAgent) -> None:
        await api.call("POST", "/session", {"lang": "python", "name": "box1"})
        status, body = await api.call("POST", "/session/box1", {"mode": "dance", "code": ""})
        assert status == 400 and "'dance'" in body["msg"]
        status, body = await api.call("POST", "/session/box1", {"mode": "query", "code": 3})
        assert status == 400 and "'code'" in body["msg"]
        status, body = await api.call(
            "POST", "/session/box1", {"mode": "query", "code": "", "runId": 5}
        )
        assert status == 400 and "'runId'" in body["msg"]
        status, body = await api.call("POST", "/session/box1", {"mode": "continue", "runId": "z"})
        assert status == 404 and "'z'" in body["msg"]
        status, body = await api.call("GET", "/session/nosuchbox")
        assert status == 404 and body["error"] == "not-found"
        status, body = await api.call("POST", "/session", {"lang": "cobol"})
        assert status == 404 and body["error"] == "image-not-found"
        status, body = await api.call("POST", "/session", {"lang": "python", "name": 7})
        assert status == 400 and "'name'" in body["msg"]
        status, body = await api.call("GET", "/session/box1", secret="x" * 40)
        assert status == 401

    served(test, tmp_path)


def test_the_limits_are_429s_naming_the_figures(tmp_path: Path) -> None:
    async def test(api: Api, agent: FakeAgent) -> None:
        for name in ("one1", "two2"):
            status, _ = await api.call("POST", "/session", {"lang": "python", "name": name})
            assert status == 201
        status, body = await api.call("POST", "/session", {"lang": "python", "name": "three"})
        assert status == 429 and body["error"] == "memory-limit"
        assert "300.0 MiB" in body["msg"] and "needs 128.0 MiB" in body["msg"]

    async def body() -> None:
        agent = FakeAgent(tmp_path / "work", {"python": 128 * MIB})
        async with serving(tmp_path, agent, max_memory_bytes=300 * MIB) as (api, fake):
            await test(api, fake)

    run(body)


def test_a_job_runs_its_command_and_records_its_exit_status(tmp_path: Path) -> None:
    async def test(api: Api, agent: FakeAgent) -> None:
        job = {"lang": "python", "name": "job1", "type": "batch", "startupCommand": "exit 3"}
        status, created = await api.call("POST", "/session", job)
        assert status == 201 and created["status"] == "PENDING"
        for _ in range(100):
            _, info = await api.call("GET", "/session/job1")
            if info["status"] == "TERMINATED":
                break
            await _pause()
        assert info["status"] == "TERMINATED"
        assert info["status_info"] == "terminated (exit 3)"

    served(test, tmp_path)


async def _pause() -> None:
    await asyncio.sleep(0.05)
