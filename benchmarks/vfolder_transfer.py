"""Storage folders: transfer speed and the service's memory while it streams, and what a mount
adds to a session's start.

One `cogbox serve` (no warm pools) and one keypair with a 1 GiB folder. Interleaved runs of:
a 256 MiB file uploaded by the unmodified `backend.ai` 23.3.12 (`vfolder upload`, TUS in
16 MiB PATCHes) and by `cogbox vfolder upload` (one streamed PATCH), downloaded by each,
and `cp` of the same file on the same disk (the floor). For each transfer, the service's
peak RSS growth (VmHWM, reset through /proc/<pid>/clear_refs before it). Then a session's
start through Backend.AI's `POST /session` (python, cold) without a mount and with the
folder mounted (holding 2,000 small files, all given to the jail's identity first): median
of the runs. Needs root (sessions, loop mounts).

    .venv/bin/python benchmarks/vfolder_transfer.py [--runs 3]

Writes benchmarks/results/vfolder_transfer.md.
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cogbox.config import data_dir
from tests.service.support import Client, Service

RESULTS = Path(__file__).parent / "results" / "vfolder_transfer.md"
SIZE = 256 << 20
COGBOX = str(Path(sys.executable).parent / "cogbox")
BACKENDAI = data_dir() / "cache" / "backendai-client-23.3" / "bin" / "backend.ai"


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def timed(pid: int, argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(seconds, MiB of peak RSS growth of the service) for one command, which must work."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = rss_kib(pid)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, input="y\n")
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "rror" in done.stdout + done.stderr:
        raise RuntimeError(f"{argv} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return seconds, (peak_kib(pid) - before) / 1024


def session_start(keys: Client, mounts: list[str]) -> float:
    started = time.perf_counter()
    name = f"bench-{time.monotonic_ns()}"
    made = keys.request(
        "POST", "/session", json={"image": "python", "name": name, "config": {"mounts": mounts}}
    )
    seconds = time.perf_counter() - started
    assert made.status_code == 201, made.text
    keys.request("DELETE", f"/session/{name}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows: dict[str, list[tuple[float, float]]] = {}
    starts: dict[str, list[float]] = {"no mount": [], "folder mounted": []}
    with tempfile.TemporaryDirectory(prefix="cogbox-vfolder-bench-") as tmp:
        work = Path(tmp)
        service = Service(work, f"sqlite:///{work / 'cogbox.db'}")
        service.start("--pool", "python=0", "--pool", "cntk=0")
        try:
            assert service.process is not None
            pid = service.process.pid
            keys = service.keypair()
            env = {
                **os.environ,
                "BACKEND_ENDPOINT": keys.url,
                "BACKEND_ACCESS_KEY": keys.access_key,
                "BACKEND_SECRET_KEY": keys.secret_key,
                "BACKEND_ENDPOINT_TYPE": "api",
                "COGBOX_ENDPOINT": keys.url,
                "COGBOX_ACCESS_KEY": keys.access_key,
                "COGBOX_SECRET_KEY": keys.secret_key,
            }
            keys.request("POST", "/folders", json={"name": "bench", "quota": "1g"})
            (work / "up").mkdir()
            with open(work / "up" / "big.bin", "wb") as f:
                for _ in range(SIZE >> 20):
                    f.write(os.urandom(1 << 20))
            for _ in range(args.runs):
                bai, ours = [str(BACKENDAI), "vfolder"], [COGBOX, "vfolder"]
                for label, argv in [
                    ("backend.ai vfolder upload", [*bai, "upload", "bench", "big.bin"]),
                    ("cogbox vfolder upload", [*ours, "upload", "bench", "big.bin"]),
                ]:
                    rows.setdefault(label, []).append(timed(pid, argv, env, work / "up"))
                for label, argv in [
                    ("backend.ai vfolder download", [*bai, "download", "bench", "big.bin"]),
                    ("cogbox vfolder download", [*ours, "download", "bench", "big.bin", "-o", "."]),
                ]:
                    down = work / "down"
                    shutil.rmtree(down, ignore_errors=True)
                    down.mkdir()
                    rows.setdefault(label, []).append(timed(pid, argv, env, down))
                started = time.perf_counter()
                shutil.copyfile(work / "up" / "big.bin", work / "copy.bin")
                os.sync()
                rows.setdefault("cp (same disk, floor)", []).append(
                    (time.perf_counter() - started, 0.0)
                )
            many = "import os\nfor i in range(2000): open(f'/home/work/bench/f{i}', 'w').write('x')"
            name = "bench-fill"
            keys.request(
                "POST",
                "/session",
                json={"image": "python", "name": name, "config": {"mounts": ["bench"]}},
            )
            keys.request(
                "POST", f"/session/{name}", json={"mode": "query", "code": many, "runId": "f"}
            )
            keys.request("DELETE", f"/session/{name}")
            for _ in range(args.runs):
                starts["no mount"].append(session_start(keys, []))
                starts["folder mounted"].append(session_start(keys, ["bench"]))
        finally:
            service.stop()
    lines = [
        "# Storage folder transfers",
        "",
        f"`.venv/bin/python benchmarks/vfolder_transfer.py --runs {args.runs}`; "
        f"{platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}, "
        f"load {load:.2f} at start. File: {SIZE >> 20} MiB of random bytes; median of "
        f"{args.runs} interleaved runs.",
        "",
        "| transfer | seconds | MiB/s | service peak RSS growth (MiB) |",
        "|---|---|---|---|",
    ]
    for label, results in rows.items():
        seconds = statistics.median(r[0] for r in results)
        growth = max(r[1] for r in results)
        lines.append(f"| {label} | {seconds:.2f} | {SIZE / 2**20 / seconds:.0f} | {growth:.1f} |")
    lines += [
        "",
        "| session start (`POST /session`, python, cold) | median ms |",
        "|---|---|",
    ]
    for label, values in starts.items():
        lines.append(f"| {label} | {statistics.median(values) * 1000:.0f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
