"""Many sessions created at once, until each one's first execution ran: two builds side by side.

The concurrent-create row of `peer_gateway.py` (20 clients each create a `python` session at
once, then run one execution) without the peer, so that two versions of cogbox can be
compared in one run: this checkout, and another source tree (`--before SRC`, e.g. a
worktree of main's `src/`), each as a fresh `cogbox serve` (default warm pools) on the same
data dir, interleaved by round. Each service gets `--bursts` bursts in a row (its sessions
are closed between them), as `peer_gateway.py` does: the second burst shows whether the
pools serve a burst that follows another.

Wall clock on a shared 2-core machine is noisy, so CPU is counted as well: the service's
whole host-side process tree (serve, agent, monitors, runc, mkfs: one cgroup v1 `cpuacct`
group that the service starts in) and the jails' own (each jail's `cpuacct` leaf: the
kernels), per session, over the burst.

    sudo COGBOX_DATA_DIR=/var/lib/cogbox .venv/bin/python benchmarks/concurrent_start.py \
        [--clients 20] [--rounds 2] [--bursts 2] [--before /path/to/old/src]
        [--before-env COGBOX_COLD_STARTS=10]   # the same build with another setting
"""

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cogbox.config import data_dir
from cogbox.service.signing import signed_headers
from tests.service.support import Client, Service

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "concurrent_start.md"
CPUACCT = Path("/sys/fs/cgroup/cpuacct")


@dataclass
class Burst:
    to_first: list[float]  # seconds from POST to the first execution's output, per client
    wall: float
    host_cpu: float  # the service's process tree, seconds
    jail_cpu: float  # the kernels in their jails, seconds
    pools: list[dict[str, Any]]  # GET /v1/pools after the burst
    bad: int


@contextlib.contextmanager
def cpu_group(name: str) -> Iterator[Path]:
    """A cpuacct cgroup this process sits in while the block runs (children stay in it)."""
    group = CPUACCT / name
    group.mkdir(exist_ok=True)
    (group / "cgroup.procs").write_text(str(os.getpid()))
    try:
        yield group
    finally:
        (CPUACCT / "cgroup.procs").write_text(str(os.getpid()))


def group_cpu(group: Path) -> float:
    return int((group / "cpuacct.usage").read_text()) / 1e9


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def jails_cpu() -> dict[str, float]:
    """CPU seconds of each running jail of this data dir (its runc leaf)."""
    usage = {}
    for bundle in (data_dir() / "run" / "jails").iterdir():
        leaf = CPUACCT / "cogbox" / bundle.name / "jail" / "cpuacct.usage"
        with contextlib.suppress(OSError, ValueError):
            usage[bundle.name] = int(leaf.read_text()) / 1e9
    return usage


class Api:
    def __init__(self, http: aiohttp.ClientSession, keys: Client) -> None:
        self.http, self.keys = http, keys

    def _sign(self, method: str, path: str) -> dict[str, str]:
        return signed_headers(
            access_key=self.keys.access_key,
            secret_key=self.keys.secret_key,
            method=method,
            path_with_query=path,
            host=urlsplit(self.keys.url).netloc,
        )

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(
            method, self.keys.url + path, json=body, headers=self._sign(method, path)
        ) as response:
            return response.status, await response.json(content_type=None)


async def _burst(api: Api, clients: int) -> tuple[Burst, list[str]]:
    """The burst, and its sessions (still running: their ends are not its cost)."""
    before = jails_cpu()
    to_first: list[float] = []
    refs: list[str] = []
    bad = 0

    async def one(number: int) -> None:
        nonlocal bad
        started = time.perf_counter()
        status, created = await api.call("POST", "/v1/sessions", {"image": "python"})
        assert status == 201, created
        refs.append(created["id"])
        code = f"print('client', {number})"
        path = f"/v1/sessions/{created['id']}/execute"
        status, result = await api.call("POST", path, {"code": code})
        out = "".join(e["text"] for e in result.get("events", []) if e["kind"] == "stdout")
        bad += out != f"client {number}\n"
        to_first.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(clients)))
    wall = time.perf_counter() - started
    after = jails_cpu()
    jail_cpu = sum(cpu - before.get(jail, 0.0) for jail, cpu in after.items())
    _, pools = await api.call("GET", "/v1/pools")
    return Burst(to_first, wall, 0.0, jail_cpu, pools["pools"], bad), refs


async def _wait_pools(api: Api, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, pools = await api.call("GET", "/v1/pools")
        # Every built image's pool full (cntk's start would compete with the burst).
        built = [p for p in pools["pools"] if (data_dir() / "images" / p["image"]).is_dir()]
        if all(p["ready"] >= p["size"] for p in built):
            return
        await asyncio.sleep(0.5)


async def _service_round(
    name: str, build: tuple[Path, dict[str, str]], clients: int, bursts: int, serve_args: list[str]
) -> list[Burst]:
    src, env = build
    with tempfile.TemporaryDirectory(prefix="cogbox-burst-") as tmp:
        directory = Path(tmp)
        database = f"sqlite:///{directory / 'cogbox.db'}"
        service = Service(directory, database, extra_env={**env, "PYTHONPATH": str(src)})
        with cpu_group(f"cogbox-bench-{os.getpid()}-{name}") as group:
            service.start(*serve_args)
        try:
            keys = service.keypair("--max-sessions", str(clients))
            results = []
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=clients * 2),
                timeout=aiohttp.ClientTimeout(total=600),
            ) as http:
                api = Api(http, keys)
                for _ in range(bursts):
                    await _wait_pools(api)
                    await asyncio.sleep(2)  # the pools' own starts settle
                    host_before = group_cpu(group)
                    burst, refs = await _burst(api, clients)
                    burst.host_cpu = group_cpu(group) - host_before
                    results.append(burst)
                    await asyncio.gather(*(api.call("DELETE", f"/v1/sessions/{r}") for r in refs))
        finally:
            service.stop()
            with contextlib.suppress(OSError):
                group.rmdir()
    return results


def _p(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _each(values: list[float]) -> str:
    return " ".join(f"{value:.1f}" for value in sorted(values))


def _span(values: list[float], digits: int = 1) -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def table(results: dict[str, list[list[Burst]]], args: argparse.Namespace) -> list[str]:
    names = list(results)
    lines = [
        "# Sessions created at once, to their first execution",
        "",
        f"`benchmarks/concurrent_start.py --clients {args.clients} --rounds {args.rounds} "
        f"--bursts {args.bursts}{' --before ' + str(args.before) if args.before else ''}"
        f"{''.join(' --before-env ' + e for e in args.before_env)}`: "
        f"{args.clients} `python` sessions created at once through `POST /v1/sessions`, each "
        "then runs one `print` (`POST .../execute`); a fresh `cogbox serve` (default warm "
        "pools) per round and build, builds interleaved. CPU: the service's host process tree "
        "(cpuacct) and the jails' own, per session, until the last first execution (the "
        "sessions' ends are not counted). Ranges over rounds.",
        "",
        f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} cores; load at the end {os.getloadavg()[0]:.1f}.",
        "",
        "| build | burst | to first execution p50 | p90 | max | host CPU / session | "
        "kernel CPU / session | pool size after | wrong |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        for index in range(args.bursts):
            bursts = [rounds[index] for rounds in results[name]]
            sizes = sorted({p["size"] for b in bursts for p in b.pools if p["image"] == "python"})
            p50s = [statistics.median(b.to_first) for b in bursts]
            lines.append(
                f"| {name} | {index + 1} | {_span(p50s)} s"
                f" | {_span([_p(b.to_first, 0.9) for b in bursts])} s"
                f" | {_span([max(b.to_first) for b in bursts])} s"
                f" | {_span([b.host_cpu / args.clients * 1000 for b in bursts], 0)} ms"
                f" | {_span([b.jail_cpu / args.clients * 1000 for b in bursts], 0)} ms"
                f" | {'/'.join(map(str, sizes))} | {sum(b.bad for b in bursts)} |"
            )
    if len(names) == 2:
        a, b = names
        lines.append("")
        for index in range(args.bursts):

            def mean(name: str, key: str, index: int = index) -> float:
                rounds = [r[index] for r in results[name]]
                if key == "p50":
                    return statistics.mean(statistics.median(x.to_first) for x in rounds)
                return statistics.mean(getattr(x, key) for x in rounds)

            lines.append(
                f"Burst {index + 1}, {b} / {a} (below 1: {b} is faster or cheaper): "
                f"p50 {mean(b, 'p50') / mean(a, 'p50'):.2f}x, "
                f"host CPU {mean(b, 'host_cpu') / mean(a, 'host_cpu'):.2f}x, "
                f"kernel CPU {mean(b, 'jail_cpu') / mean(a, 'jail_cpu'):.2f}x."
            )
    return [*lines, ""]


async def _main(args: argparse.Namespace) -> dict[str, list[list[Burst]]]:
    builds: dict[str, tuple[Path, dict[str, str]]] = {"this": (ROOT / "src", {})}
    if args.before or args.before_env:
        settings = dict(item.split("=", 1) for item in args.before_env)
        builds = {"before": (args.before or ROOT / "src", settings), **builds}
    results: dict[str, list[list[Burst]]] = {name: [] for name in builds}
    for number in range(args.rounds):
        order = list(builds.items())
        if number % 2:
            order.reverse()
        for name, build in order:
            print(f"round {number + 1}: {name}", file=sys.stderr, flush=True)
            bursts = await _service_round(name, build, args.clients, args.bursts, args.serve_arg)
            for burst in bursts:
                print(
                    f"  p50 {statistics.median(burst.to_first):.2f} s max {max(burst.to_first):.2f}"
                    f" s host {burst.host_cpu:.1f} s jails {burst.jail_cpu:.1f} s "
                    f"pools {burst.pools}\n  each: {_each(burst.to_first)}",
                    file=sys.stderr,
                    flush=True,
                )
            results[name].append(bursts)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bursts", type=int, default=2)
    parser.add_argument("--before", type=Path, help="another cogbox src/ to compare against")
    parser.add_argument(
        "--before-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the 'before' service (e.g. COGBOX_COLD_STARTS=4); repeatable",
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="passed to cogbox serve (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = asyncio.run(_main(args))
    lines = table(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
