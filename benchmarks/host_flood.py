"""Flood benchmark of `cogbox serve`: one tenant floods output at clients that never read.

Tenant A has a `python` session; three WebSocket clients of A attach and never read a
byte (small receive buffers, so their TCP windows close at once), and A's kernel prints
`--flood-mb` MB of output in 1 MiB writes. Meanwhile tenant B, in its own session, times
`1+1` round trips (`POST /v1/sessions/{id}/execute`). Reported: the service's peak RSS
(VmHWM of its process, from /proc) and B's round-trip percentiles. One row per surface:

- jupyter:   three Jupyter channel WebSockets on A's kernel; the first sends the flood
- native:    three native streams (`/v1/sessions/{id}/stream`), each flooding its own session
- backendai: three Backend.AI streams (`/stream/session/{id}/execute`), the same
- none:      no flood (the control row: B's latency on this machine as it is)

Targets (issue 8): service RSS under 300 MiB, B's `1+1` under 100 ms. Run as root with the
images built (`cogbox image build python`); writes benchmarks/results/host_flood.md.

    sudo .venv/bin/python benchmarks/host_flood.py [--flood-mb 400] [--surfaces jupyter,...]
"""

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.attacks.stream_clients import (
    backendai_stream,
    execute_request,
    flood_code,
    jupyter_channels,
    native_stream,
)
from tests.service.support import Client, Service

RESULTS = Path(__file__).parent / "results" / "host_flood.md"
RSS_TARGET_MIB = 300
LATENCY_TARGET_MS = 100
CLIENTS = 3
_SMALL_BUFFER = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def attach_flooders(
    surface: str, keys: Client, megabytes: int
) -> tuple[list[websocket.WebSocket], list[str]]:
    """Three WebSockets of `keys` that received (or will receive) a flood and never read;
    and the sessions made for them."""
    code = flood_code(megabytes)
    if surface == "none":  # the control: B alone, to tell the flood from the machine
        return [], []
    if surface == "jupyter":
        ref = keys.create()["id"]
        sockets = [jupyter_channels(keys, ref, sockopt=_SMALL_BUFFER) for _ in range(CLIENTS)]
        time.sleep(1.0)  # every relay subscribed to iopub
        sockets[0].send(execute_request(code))
        return sockets, [ref]
    refs = [keys.create()["id"] for _ in range(CLIENTS)]
    sockets = []
    for ref in refs:
        share = max(1, megabytes // CLIENTS)
        if surface == "native":
            ws = native_stream(keys, ref, sockopt=_SMALL_BUFFER)
            ws.send(json.dumps({"code": flood_code(share)}))
        else:
            ws = backendai_stream(keys, ref, sockopt=_SMALL_BUFFER)
            ws.send(json.dumps({"mode": "query", "code": flood_code(share)}))
        sockets.append(ws)
    return sockets, refs


@dataclass
class FloodResult:
    surface: str
    rss_before_mib: float
    peak_rss_mib: float
    latencies_ms: list[float]
    flood_seconds: float


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_surface(service: Service, surface: str, megabytes: int, seconds: float) -> FloodResult:
    assert service.process is not None
    pid = service.process.pid
    a = service.keypair("--max-sessions", "10")
    b = service.keypair()
    b_ref = b.create()["id"]
    b.execute(b_ref, "1+1")  # warm
    rss_before = rss_kib(pid) / 1024
    peak = rss_before
    latencies: list[float] = []
    stop = threading.Event()

    def tenant_b() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            result = b.execute(b_ref, "1+1")
            latencies.append((time.perf_counter() - started) * 1000)
            assert result["status"] == "finished/ok", result
            time.sleep(0.02)

    timer = threading.Thread(target=tenant_b)
    timer.start()
    started = time.monotonic()
    sockets, refs = attach_flooders(surface, a, megabytes)
    try:
        while time.monotonic() - started < seconds:
            peak = max(peak, rss_kib(pid) / 1024)
            time.sleep(0.1)
    finally:
        stop.set()
        timer.join()
        for ws in sockets:
            ws.sock.setblocking(False)  # type: ignore[union-attr]
            ws.shutdown()
        for ref in refs:
            a.request("DELETE", f"/v1/sessions/{ref}")
        b.request("DELETE", f"/v1/sessions/{b_ref}")
    hwm = rss_kib(pid, "VmHWM") / 1024
    return FloodResult(surface, rss_before, max(peak, hwm), latencies, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood-mb", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=40.0, help="how long each flood runs")
    parser.add_argument("--surfaces", default="none,jupyter,native,backendai")
    args = parser.parse_args()
    results = []
    for surface in args.surfaces.split(","):
        # A fresh service per surface: VmHWM is the peak of that surface's flood alone.
        with tempfile.TemporaryDirectory(prefix="cogbox-flood-") as tmp:
            directory = Path(tmp)
            service = Service(directory, f"sqlite:///{directory / 'cogbox.db'}").start()
            try:
                results.append(run_surface(service, surface, args.flood_mb, args.seconds))
            finally:
                service.stop()
        print(results[-1].surface, results[-1].peak_rss_mib, flush=True)
    ok = all(
        r.peak_rss_mib < RSS_TARGET_MIB and percentile(r.latencies_ms, 0.99) < LATENCY_TARGET_MS
        for r in results
    )
    lines = [
        "# Output flood benchmark",
        "",
        f"`benchmarks/host_flood.py --flood-mb {args.flood_mb} --seconds {args.seconds:g}`: "
        f"tenant A prints {args.flood_mb} MiB (1 MiB writes) while {CLIENTS} WebSocket "
        "clients of A never read; tenant B times `1+1` round trips "
        "(`POST /v1/sessions/{id}/execute`) meanwhile. A fresh service per surface; peak RSS "
        "is its VmHWM.",
        "",
        f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} cores (shared with other work while it ran).",
        "",
        "| surface | RSS before (MiB) | peak RSS (MiB) | B runs | B p50 (ms) | B p99 (ms) "
        "| B max (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lat = r.latencies_ms or [float("nan")]
        lines.append(
            f"| {r.surface} | {r.rss_before_mib:.0f} | {r.peak_rss_mib:.0f} | {len(lat)} | "
            f"{percentile(lat, 0.5):.1f} | {percentile(lat, 0.99):.1f} | {max(lat):.1f} |"
        )
    lines += [
        "",
        f"Targets: peak RSS under {RSS_TARGET_MIB} MiB, B's `1+1` p99 under "
        f"{LATENCY_TARGET_MS} ms: "
        + ("met." if ok else "**missed** (see the rows above).")
        + " The max column is the worst single round trip; compare it with the control row.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
