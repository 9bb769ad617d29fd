"""cogbox against Jupyter Kernel Gateway, interleaved in one run on this machine.

The peer is what a user would run instead: Jupyter Kernel Gateway serving plain local
ipykernels with no sandbox at all, installed from PyPI in its own venv under the data dir
(`$COGBOX_DATA_DIR/peer-gateway`, made once and reused). Stock Kernel Gateway leaves Nagle's
algorithm on (a 40 ms delayed-ACK stall per small exchange), so it is started through a
small launcher that sets TCP_NODELAY on every accepted socket: the fair peer.

cogbox: `cogbox serve` with the `python` image, jailed (the sandbox on), driven through its
fastest client API, the native WebSocket `/v1/sessions/{id}/stream` (one per client; the
request is signed once, at the upgrade). Kernel Gateway: `POST /api/kernels` and its
WebSocket `/api/kernels/{id}/channels` speaking Jupyter messages; a run is over when both
its `execute_reply` and its `idle` status arrived.

Each round, on each side in turn (the order alternates by round):

0. 20 clients create a session (kernel) at once, nothing else running: each one's time
   until its first execution has run (p50 over clients); those sessions are then closed.
1. 20 clients create a session at once and run 50 executions each, each client starting
   as soon as its session is up (as `service_load.py` does): executions/s over the whole
   (1000 / wall), and the time to first execution again (there the first sessions' runs
   compete with the later ones' starts).
2. With all sessions started, 50 more executions each: executions/s of the execution
   phase only, latency p50/p90/p99, and the server side's CPU per execution (utime +
   stime from /proc/<pid>/stat of Kernel Gateway's process; of cogbox's serve, its agent
   and the kernels' monitors; kernels excluded on both sides), and beside it the kernels'
   CPU and the whole machine's (/proc/stat) per execution.
3. `1+1` from one client, sequential (median).

Every output is checked exactly; a lost or mixed output is counted and fails the run.
Before the first round, cogbox's warm pools (its defaults: one kernel each of the built
images) are let fill, as on a service that has been running; Kernel Gateway has nothing
to prepare.

    sudo COGBOX_DATA_DIR=/var/lib/cogbox .venv/bin/python benchmarks/peer_gateway.py \
        [--clients 20] [--runs 50] [--rounds 2] [--py-spy PATH --profile-dir DIR]

With --py-spy, each server's execution phase is sampled (its Python while it holds the
GIL) into DIR as collapsed stacks, one file per side and round.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cogbox.service.auth import signed_headers
from tests.service.support import Client, Service, free_port

RESULTS = Path(__file__).parent / "results" / "peer_gateway.md"
PEER_PACKAGES = ["jupyter_kernel_gateway==3.0.1", "ipykernel"]
_TICKS = os.sysconf("SC_CLK_TCK")

# Run by the peer's own Python: Kernel Gateway with TCP_NODELAY on each accepted socket.
LAUNCHER = """\
import socket
import sys

import tornado.iostream

_init = tornado.iostream.IOStream.__init__


def _init_nodelay(self, sock, *args, **kwargs):
    _init(self, sock, *args, **kwargs)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not a TCP socket


tornado.iostream.IOStream.__init__ = _init_nodelay

from kernel_gateway import launch_instance

sys.exit(launch_instance())
"""


def peer_venv(data_dir: Path) -> Path:
    """The peer's venv (made once, then reused): its Python."""
    home = data_dir / "peer-gateway"
    python = home / "venv" / "bin" / "python"
    marker = home / "venv" / ".installed"
    if not marker.exists() or marker.read_text() != " ".join(PEER_PACKAGES):
        home.mkdir(parents=True, exist_ok=True)
        # The base interpreter: the project's own venv may lack ensurepip.
        base = Path(sys.base_prefix) / "bin" / "python3"
        subprocess.run([str(base), "-m", "venv", str(home / "venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
        marker.write_text(" ".join(PEER_PACKAGES))
    (home / "launch_nodelay.py").write_text(LAUNCHER)
    return python


def _say_cpu(side: str, spent: dict[int, float], executions: int) -> None:
    """Each server process's share of the execution phase's CPU, on stderr."""
    shares = []
    for pid, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            name = " ".join(part.decode(errors="replace") for part in argv[1:4])[-40:]
        except OSError:
            name = "?"
        shares.append(f"{pid} {name}: {seconds * 1000 / executions:.2f}")
    print(
        f"{side} server CPU ms per execution, by process: " + "; ".join(shares[:6]),
        file=sys.stderr,
        flush=True,
    )


def cpu_seconds(pid: int) -> float:
    """The process's own user + system CPU time (children excluded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_cpu_seconds() -> float:
    """CPU time all cores spent busy so far (/proc/stat: all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / _TICKS


def pids_running(marker: bytes) -> list[int]:
    """The processes on the machine whose command line holds `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def kernel_pids() -> list[int]:
    """Every ipykernel on the machine (both sides start theirs as `-m ipykernel_launcher`;
    a jailed one is seen from here too). Idle ones (cogbox's warm pools) add about 0."""
    return pids_running(b"ipykernel_launcher")


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Tally:
    good: int = 0
    bad: int = 0
    latencies: list[float] = field(default_factory=list)


class Kernel:
    """One client's session on one side: run code, get its stdout and whether it ended well.

    A task reads the WebSocket all the time, so an idle client (one that finished its runs
    while others still go) still answers the server's heartbeat pings; both servers close
    a connection whose pongs stop."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self._ws:  # pings are answered inside
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._frames.put_nowait(json.loads(message.data))
        finally:
            self._frames.put_nowait(None)

    async def frame(self) -> dict[str, Any] | None:
        """The next frame; None once the connection closed."""
        frame = await self._frames.get()
        if frame is None:
            self._frames.put_nowait(None)
        return frame

    async def run(self, code: str) -> tuple[str, bool]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Side:
    name: str
    pid: int  # the server's own process (the one profiled)

    def server_pids(self) -> list[int]:
        """The host processes that serve its kernels (kernels excluded): CPU counts them all."""
        return [self.pid]

    async def open(self, http: aiohttp.ClientSession) -> Kernel:
        raise NotImplementedError


# ---------------------------------------------------------------------- cogbox


class CogboxKernel(Kernel):
    def __init__(
        self, http: aiohttp.ClientSession, keys: Client, ref: str, ws: Any, sign: Callable[..., Any]
    ) -> None:
        super().__init__(ws)
        self._http, self._keys, self._ref, self._sign = http, keys, ref, sign

    async def run(self, code: str) -> tuple[str, bool]:
        await self._ws.send_str(json.dumps({"code": code}))
        out: list[str] = []
        while True:
            frame = await self.frame()
            if frame is None:
                return "".join(out), False
            kind = frame.get("kind")
            if kind == "stdout":
                out.append(frame["text"])
            elif kind == "finished":
                return "".join(out), frame.get("status") == "ok"
            elif kind in ("problem", "kernel_died"):
                return "".join(out) + f"<{frame}>", False

    async def close(self) -> None:
        await self._ws.close()
        await self._reader
        path = f"/v1/sessions/{self._ref}"
        async with self._http.delete(self._keys.url + path, headers=self._sign("DELETE", path)):
            pass


class CogboxSide(Side):
    name = "cogbox"

    def __init__(self, service: Service, keys: Client) -> None:
        assert service.process is not None
        self.pid = service.process.pid
        self._keys = keys
        self._agent_pid_file = service.directory / "agent" / "agent.pid"

    def server_pids(self) -> list[int]:
        """serve, its agent and the kernels' monitors: the work Kernel Gateway's one process
        does (relaying, decoding, keeping runs) is split over these in cogbox."""
        return [
            self.pid,
            int(self._agent_pid_file.read_text()),
            *pids_running(b"cogbox.kernel.monitor"),
        ]

    def _sign(self, method: str, path: str) -> dict[str, str]:
        return signed_headers(
            access_key=self._keys.access_key,
            secret_key=self._keys.secret_key,
            method=method,
            path_with_query=path,
            host=urlsplit(self._keys.url).netloc,
        )

    async def open(self, http: aiohttp.ClientSession) -> Kernel:
        url = self._keys.url
        body = {"image": "python"}
        async with http.post(
            url + "/v1/sessions", json=body, headers=self._sign("POST", "/v1/sessions")
        ) as response:
            created = await response.json()
            assert response.status == 201, created
        ref = created["id"]
        path = f"/v1/sessions/{ref}/stream"
        ws = await http.ws_connect(url + path, headers=self._sign("GET", path), max_msg_size=0)
        return CogboxKernel(http, self._keys, ref, ws, self._sign)


# ---------------------------------------------------------------------- Kernel Gateway


class GatewayKernel(Kernel):
    def __init__(self, http: aiohttp.ClientSession, base: str, kernel_id: str, ws: Any) -> None:
        super().__init__(ws)
        self._http, self._base, self._id = http, base, kernel_id
        self._session = uuid.uuid4().hex

    async def run(self, code: str) -> tuple[str, bool]:
        msg_id = uuid.uuid4().hex
        await self._ws.send_str(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "bench",
                        "session": self._session,
                        "date": "",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        out: list[str] = []
        reply: str | None = None
        idle = False
        while reply is None or not idle:
            frame = await self.frame()
            if frame is None:
                return "".join(out), False
            if frame.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = frame["header"]["msg_type"]
            if kind == "stream" and frame["content"]["name"] == "stdout":
                out.append(frame["content"]["text"])
            elif kind == "execute_reply":
                reply = frame["content"]["status"]
            elif kind == "status" and frame["content"]["execution_state"] == "idle":
                idle = True
        return "".join(out), reply == "ok"

    async def close(self) -> None:
        await self._ws.close()
        await self._reader
        async with self._http.delete(f"{self._base}/api/kernels/{self._id}"):
            pass


class GatewaySide(Side):
    name = "Kernel Gateway"

    def __init__(self, process: subprocess.Popen[bytes], base: str) -> None:
        self.pid = process.pid
        self._base = base

    async def open(self, http: aiohttp.ClientSession) -> Kernel:
        async with http.post(f"{self._base}/api/kernels", json={"name": "python3"}) as response:
            created = await response.json()
            assert response.status == 201, created
        kernel_id = created["id"]
        ws_url = self._base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        ws = await http.ws_connect(ws_url, max_msg_size=0)
        return GatewayKernel(http, self._base, kernel_id, ws)


def ipython_dir(directory: Path) -> Path:
    """IPython's folder for the peer's kernels: each keeps its history in memory, as each
    jailed kernel keeps its own (20 kernels on one history file print 'database is locked'
    into their output)."""
    folder = directory / "ipython"
    profile = folder / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "ipython_kernel_config.py").write_text('c.HistoryManager.hist_file = ":memory:"\n')
    return folder


def start_gateway(python: Path, directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(directory / "gateway.log", "ab")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(
        [
            str(python),
            str(python.parents[2] / "launch_nodelay.py"),
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={port}",
            "--KernelGatewayApp.log_level=WARN",
        ],
        stdout=log,
        stderr=log,
        env={
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(directory / "runtime"),
            "IPYTHONDIR": str(ipython_dir(directory)),
        },
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            import urllib.request

            with urllib.request.urlopen(base + "/api", timeout=2):
                return process, base
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"Kernel Gateway did not start: see {directory / 'gateway.log'}")


# ---------------------------------------------------------------------- the load


def _code(client: int, run: int) -> tuple[str, str]:
    return (
        f"print('client {client} run {run} square', {run} * {run})",
        f"client {client} run {run} square {run * run}\n",
    )


async def _runs(kernel: Kernel, client: int, first: int, runs: int, tally: Tally) -> None:
    for run in range(first, first + runs):
        code, expected = _code(client, run)
        started = time.perf_counter()
        try:
            out, ok = await kernel.run(code)
        except (TimeoutError, aiohttp.ClientError):
            out, ok = "", False
        tally.latencies.append(time.perf_counter() - started)
        if ok and out == expected:
            tally.good += 1
        else:
            tally.bad += 1
            if tally.bad <= 3:
                print(f"  wrong output: client {client} run {run}: {out!r}", file=sys.stderr)


@dataclass
class Round:
    whole_per_s: float
    exec_per_s: float
    p50: float
    p90: float
    p99: float
    cpu_per_exec: float
    machine_per_exec: float
    kernels_per_exec: float
    create_p50: float
    create_busy_p50: float
    one_plus_one: float
    good: int
    bad: int


def _profile(side: Side, profile: tuple[Path, Path] | None) -> list[subprocess.Popen[bytes]]:
    """py-spy sampling the server's Python while it holds the GIL (its CPU, not its waits),
    over the execution phase, as collapsed stacks: one file per server process (cogbox:
    its serve and its agent; the kernels' monitors are left out)."""
    if profile is None:
        return []
    py_spy, folder = profile
    folder.mkdir(parents=True, exist_ok=True)
    name = side.name.replace(" ", "-").lower()
    command = [str(py_spy), "record", "--gil", "--nonblocking", "-r", "200", "-f", "raw"]
    processes = []
    for number, pid in enumerate(side.server_pids()[:2]):
        out = folder / f"{name}-{number}-{time.strftime('%H%M%S')}.txt"
        processes.append(
            subprocess.Popen(
                [*command, "-o", str(out), "-p", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(0.5)  # attached before the phase starts
    return processes


async def _round(
    side: Side, clients: int, runs: int, profile: tuple[Path, Path] | None = None
) -> Round:
    connector = aiohttp.TCPConnector(limit=clients * 4)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as http:
        # 20 sessions created at once, nothing else running: until each ran its first code.
        alone = Tally()
        to_first_alone: list[float] = []

        async def first_only(number: int) -> Kernel:
            started = time.perf_counter()
            kernel = await side.open(http)
            await _runs(kernel, number, 0, 1, alone)
            to_first_alone.append(time.perf_counter() - started)
            return kernel

        firsts = await asyncio.gather(*(first_only(n) for n in range(clients)))
        await asyncio.gather(*(k.close() for k in firsts))

        whole = Tally()
        to_first: list[float] = []

        async def client(number: int) -> Kernel:
            started = time.perf_counter()
            kernel = await side.open(http)
            await _runs(kernel, number, 0, 1, whole)
            to_first.append(time.perf_counter() - started)
            await _runs(kernel, number, 1, runs - 1, whole)
            return kernel

        started = time.perf_counter()
        kernels = await asyncio.gather(*(client(n) for n in range(clients)))
        whole_s = time.perf_counter() - started

        phase = Tally()
        profilers = _profile(side, profile)
        pids = side.server_pids()
        before = {pid: cpu_seconds(pid) for pid in pids}
        machine_before = machine_cpu_seconds()
        kernels_before = {pid: cpu_seconds(pid) for pid in kernel_pids()}
        started = time.perf_counter()
        await asyncio.gather(*(_runs(k, n, runs, runs, phase) for n, k in enumerate(kernels)))
        phase_s = time.perf_counter() - started
        machine = machine_cpu_seconds() - machine_before
        kernels_cpu = 0.0
        for pid, seconds in kernels_before.items():
            with contextlib.suppress(OSError):
                kernels_cpu += cpu_seconds(pid) - seconds
        spent = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
        cpu = sum(spent.values())
        _say_cpu(side.name, spent, clients * runs)
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
            profiler.wait(timeout=60)

        single = Tally()
        for _ in range(5):  # warm
            await kernels[0].run("1+1")
        for _ in range(100):
            begun = time.perf_counter()
            _, ok = await kernels[0].run("1+1")
            single.latencies.append(time.perf_counter() - begun)
            single.good += ok
            single.bad += not ok
        await asyncio.gather(*(k.close() for k in kernels))
    lat = phase.latencies
    return Round(
        whole_per_s=clients * runs / whole_s,
        exec_per_s=clients * runs / phase_s,
        p50=_percentile(lat, 0.50),
        p90=_percentile(lat, 0.90),
        p99=_percentile(lat, 0.99),
        cpu_per_exec=cpu / (clients * runs),
        machine_per_exec=machine / (clients * runs),
        kernels_per_exec=kernels_cpu / (clients * runs),
        create_p50=statistics.median(to_first_alone),
        create_busy_p50=statistics.median(to_first),
        one_plus_one=statistics.median(single.latencies),
        good=alone.good + whole.good + phase.good + single.good,
        bad=alone.bad + whole.bad + phase.bad + single.bad,
    )


def _span(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    low, high = min(values) * scale, max(values) * scale
    return (
        f"{low:.{digits}f}"
        if f"{low:.{digits}f}" == f"{high:.{digits}f}"
        else (f"{low:.{digits}f}-{high:.{digits}f}")
    )


def table(ours: list[Round], peer: list[Round], args: argparse.Namespace) -> list[str]:
    def mean(rounds: list[Round], key: str) -> float:
        return statistics.mean(getattr(r, key) for r in rounds)

    def row(label: str, key: str, scale: float, unit: str, higher_is_better: bool) -> str:
        a = [getattr(r, key) for r in ours]
        b = [getattr(r, key) for r in peer]
        ratio = mean(ours, key) / mean(peer, key)
        favour = ratio if higher_is_better else 1 / ratio
        return (
            f"| {label} | {_span(a, scale)}{unit} | {_span(b, scale)}{unit} | "
            f"{ratio:.2f}x | {favour:.2f}x |"
        )

    total = args.clients * (args.runs * 2 + 1) + 100
    return [
        "# cogbox against Jupyter Kernel Gateway",
        "",
        f"`benchmarks/peer_gateway.py --clients {args.clients} --runs {args.runs} "
        f"--rounds {args.rounds}`, interleaved in one run: {args.clients} clients each with its "
        f"own kernel, {args.runs} executions each per phase, every output checked. cogbox: "
        "`python` image jailed, native WebSocket `/v1/sessions/{id}/stream`. Peer: Jupyter "
        "Kernel Gateway 3.0.1 with plain local ipykernels (no sandbox), TCP_NODELAY set by a "
        "launcher, its WebSocket channels. Server CPU: Kernel Gateway's process; "
        "cogbox's serve, agent and kernel monitors (/proc/<pid>/stat), kernels excluded on both "
        "sides; the kernels' and the whole machine's CPU (/proc/stat) are shown too. Ranges are "
        "over rounds; ratios of means; the last column is the ratio in cogbox's favour "
        "(>= 1.00x: cogbox as good or better).",
        "",
        f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} cores.",
        "",
        "| measure | cogbox | Kernel Gateway | cogbox / KG | in cogbox's favour |",
        "|---|---|---|---|---|",
        row("executions/s (whole: starts included)", "whole_per_s", 1, "", True),
        row("executions/s (execution phase only)", "exec_per_s", 1, "", True),
        row("latency p50", "p50", 1000, " ms", False),
        row("latency p90", "p90", 1000, " ms", False),
        row("latency p99", "p99", 1000, " ms", False),
        row("server-side CPU per execution", "cpu_per_exec", 1000, " ms", False),
        row("the kernels' CPU per execution", "kernels_per_exec", 1000, " ms", False),
        row(
            "the whole machine's CPU per execution (servers, kernels, this client)",
            "machine_per_exec",
            1000,
            " ms",
            False,
        ),
        row(
            f"{args.clients} sessions created at once, until the first execution ran (p50)",
            "create_p50",
            1,
            " s",
            False,
        ),
        row(
            f"the same while the first ones already run their {args.runs} (the whole pass), p50",
            "create_busy_p50",
            1,
            " s",
            False,
        ),
        row("`1+1`, one client (median)", "one_plus_one", 1000, " ms", False),
        f"| lost or mixed outputs (of {total} per round) | "
        f"{sum(r.bad for r in ours)} | {sum(r.bad for r in peer)} | | |",
        "",
    ]


def settle(keys: Client, timeout: float = 120.0) -> None:
    """Wait until the service's warm pools of built images are full: a service that runs,
    not one still starting its pools' kernels (cntk's among them) under the first burst."""
    data_dir = Path(os.environ.get("COGBOX_DATA_DIR", "/var/lib/cogbox"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = keys.request("GET", "/v1/pools").json()["pools"]
        built = [p for p in pools if (data_dir / "images" / p["image"]).is_dir()]
        if all(p["ready"] >= p["size"] for p in built):
            return
        time.sleep(0.5)


async def _main(args: argparse.Namespace) -> tuple[list[Round], list[Round]]:
    data_dir = Path(os.environ.get("COGBOX_DATA_DIR", "/var/lib/cogbox"))
    python = peer_venv(data_dir)
    with tempfile.TemporaryDirectory(prefix="cogbox-peer-") as tmp:
        directory = Path(tmp)
        service = Service(directory, f"sqlite:///{directory / 'cogbox.db'}").start()
        gateway, base = start_gateway(python, directory)
        try:
            keys = service.keypair("--max-sessions", str(args.clients))
            settle(keys)
            sides: list[Side] = [CogboxSide(service, keys), GatewaySide(gateway, base)]
            results: dict[str, list[Round]] = {s.name: [] for s in sides}
            for number in range(args.rounds):
                order = sides if number % 2 == 0 else sides[::-1]
                for side in order:
                    print(f"round {number + 1}: {side.name}", file=sys.stderr, flush=True)
                    profile = (args.py_spy, args.profile_dir) if args.py_spy else None
                    result = await _round(side, args.clients, args.runs, profile)
                    print(f"  {result}", file=sys.stderr, flush=True)
                    results[side.name].append(result)
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
            service.stop()
    return results["cogbox"], results["Kernel Gateway"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table goes")
    parser.add_argument("--py-spy", type=Path, help="profile each server's execution phase")
    parser.add_argument("--profile-dir", type=Path, default=Path("peer-profiles"))
    args = parser.parse_args()
    ours, peer = asyncio.run(_main(args))
    lines = table(ours, peer, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    bad = sum(r.bad for r in ours + peer)
    sys.exit(0 if bad == 0 else 1)


if __name__ == "__main__":
    main()
