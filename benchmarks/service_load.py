"""Load benchmark of `cogbox serve`: N concurrent clients x M executions on `python` sessions.

Each client has its own session and checks that every run printed exactly what it asked
for (no lost or mixed-up outputs). Writes throughput and latency percentiles to
benchmarks/results/service_load.md.

    sudo .venv/bin/python benchmarks/service_load.py [--clients 20] [--runs 50]
"""

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cogbox.service.auth import signed_headers
from tests.service.support import Client, Service

RESULTS = Path(__file__).parent / "results" / "service_load.md"


async def _call(
    http: aiohttp.ClientSession, keys: Client, method: str, path: str, body: object
) -> tuple[int, dict[str, object]]:
    headers = signed_headers(
        access_key=keys.access_key,
        secret_key=keys.secret_key,
        method=method,
        path_with_query=path,
        host=urlsplit(keys.url).netloc,
    )
    async with http.request(method, keys.url + path, json=body, headers=headers) as response:
        data = await response.json() if response.content_type == "application/json" else {}
        return response.status, data


async def _client(
    http: aiohttp.ClientSession, keys: Client, number: int, runs: int, latencies: list[float]
) -> tuple[int, int]:
    """(runs whose output was exactly right, runs whose output was wrong or missing)"""
    status, session = await _call(http, keys, "POST", "/v1/sessions", {"image": "python"})
    assert status == 201, session
    ref = session["id"]
    good = bad = 0
    for run in range(runs):
        expected = f"client {number} run {run} square {run * run}\n"
        code = f"print('client {number} run {run} square', {run} * {run})"
        started = time.perf_counter()
        status, result = await _call(
            http, keys, "POST", f"/v1/sessions/{ref}/execute", {"code": code}
        )
        latencies.append(time.perf_counter() - started)
        events = result.get("events", []) if status == 200 else []
        assert isinstance(events, list)
        stdout = "".join(e["text"] for e in events if e["kind"] == "stdout")
        if stdout == expected and result.get("status") == "finished/ok":
            good += 1
        else:
            bad += 1
    await _call(http, keys, "DELETE", f"/v1/sessions/{ref}", None)
    return good, bad


async def _load(keys: Client, clients: int, runs: int) -> tuple[float, list[float], int, int]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(_client(http, keys, n, runs, latencies) for n in range(clients))
        )
        elapsed = time.perf_counter() - started
    return elapsed, latencies, sum(g for g, _ in outcomes), sum(b for _, b in outcomes)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cogbox-load-") as tmp:
        directory = Path(tmp)
        service = Service(directory, f"sqlite:///{directory / 'cogbox.db'}").start()
        try:
            keys = service.keypair("--max-sessions", str(args.clients))
            elapsed, latencies, good, bad = asyncio.run(_load(keys, args.clients, args.runs))
        finally:
            service.stop()
    total = args.clients * args.runs
    lines = [
        "# Service load benchmark",
        "",
        f"`benchmarks/service_load.py --clients {args.clients} --runs {args.runs}`: "
        f"{args.clients} concurrent clients, each with its own `python` session, "
        f"{args.runs} executions each through `POST /v1/sessions/{{id}}/execute` "
        "(signed requests, SQLite database), each output checked exactly.",
        "",
        f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, "
        f"{__import__('os').cpu_count()} cores.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| executions | {total} |",
        f"| correct outputs | {good} |",
        f"| lost or mixed-up outputs | {total - good} |",
        f"| wall time (s, incl. session starts) | {elapsed:.2f} |",
        f"| throughput (executions/s) | {total / elapsed:.1f} |",
        f"| latency p50 (ms) | {_percentile(latencies, 0.50) * 1000:.1f} |",
        f"| latency p99 (ms) | {_percentile(latencies, 0.99) * 1000:.1f} |",
        f"| latency mean (ms) | {statistics.mean(latencies) * 1000:.1f} |",
        f"| latency max (ms) | {max(latencies) * 1000:.1f} |",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    sys.exit(0 if bad == 0 and good == total else 1)


if __name__ == "__main__":
    main()
