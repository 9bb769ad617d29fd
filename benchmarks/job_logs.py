"""Full-log benchmark of `cogbox serve`: a batch job prints `--mb` MB, then its log is read.

A `python` job writes `--mb` MB to stdout in 64 KiB lines; timed: submit to the job's end
(all of it goes through the kernel, the per-run cap and the log writer), then reading the
whole log back through the native API (`GET /v1/sessions/{id}/logs`) and Backend.AI's
(`GET /session/{name}/logs`, JSON). Reported: each time, the throughput, the log's size
against what was printed, and the service's peak RSS (VmHWM), which must stay bounded
(target: under 300 MiB) as neither side holds a log in memory. Rounds interleave the two
readers. Run as root with the python image built; writes benchmarks/results/job_logs.md.

    sudo .venv/bin/python benchmarks/job_logs.py [--mb 200] [--rounds 3]
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.support import Client, Service

RESULTS = Path(__file__).parent / "results" / "job_logs.md"
RSS_TARGET_MIB = 300
_LINE = 65536


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def wait_ended(keys: Client, ref: str) -> dict[str, object]:
    while True:
        info = dict(keys.request("GET", f"/v1/sessions/{ref}").json())
        if info["status"] in ("terminated", "cancelled", "error", "lost"):
            return info
        time.sleep(0.05)


def streamed_size(keys: Client, path: str) -> int:
    size = 0
    with keys.request("GET", path, stream=True, timeout=600) as response:
        for chunk in response.iter_content(1 << 20):
            size += len(chunk)
    return size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = args.mb * (1 << 20) // _LINE
    printed = lines * _LINE
    command = (
        f"python3 -c \"import sys\nline = 'x' * {_LINE - 1} + '\\n'\n"
        f'for _ in range({lines}): sys.stdout.write(line)"'
    )
    runs, natives, bais = [], [], []
    sizes = set()
    with tempfile.TemporaryDirectory() as folder:
        service = Service(Path(folder), f"sqlite:///{folder}/cogbox.db")
        service.start("--pool", "python=0", "--log-limit", "4g")
        try:
            assert service.process is not None
            keys = service.keypair()
            for round_ in range(args.rounds):
                name = f"bench-{round_}"
                start = time.perf_counter()
                keys.create(type="batch", startup_command=command, name=name)
                info = wait_ended(keys, name)
                runs.append(time.perf_counter() - start)
                assert info["result"] == "SUCCESS", info
                start = time.perf_counter()
                sizes.add(streamed_size(keys, f"/v1/sessions/{name}/logs"))
                natives.append(time.perf_counter() - start)
                start = time.perf_counter()
                streamed_size(keys, f"/session/{name}/logs")
                bais.append(time.perf_counter() - start)
            rss = peak_rss_mib(service.process.pid)
        finally:
            service.stop()
    size = sizes.pop() if len(sizes) == 1 else -1
    median = statistics.median
    rows = [
        ("job: submit to end", median(runs)),
        ("read: native /v1/sessions/{id}/logs", median(natives)),
        ("read: Backend.AI /session/{name}/logs (JSON)", median(bais)),
    ]
    table = [
        "# Full session logs: a batch job's output, logged and read back",
        "",
        f"`sudo .venv/bin/python benchmarks/job_logs.py --mb {args.mb} --rounds {args.rounds}`",
        f"on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs), "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"Printed {printed:,} bytes per job; the log held {size:,} bytes "
        f"({'byte count matches' if size == printed else 'MISMATCH'}).",
        "",
        "| step | median s | MB/s |",
        "| --- | ---: | ---: |",
        *[f"| {what} | {secs:.2f} | {printed / secs / 1e6:.0f} |" for what, secs in rows],
        "",
        f"Service peak RSS (VmHWM): {rss:.0f} MiB (target under {RSS_TARGET_MIB} MiB: "
        f"{'met' if rss < RSS_TARGET_MIB else 'MISSED'}).",
        "",
    ]
    RESULTS.write_text("\n".join(table))
    print("\n".join(table))


if __name__ == "__main__":
    main()
