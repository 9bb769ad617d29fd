"""What a kernel's monitor costs the host: its CPU while its session sits idle, and per
execution while its session runs `1+1` back to back (the monitor spools every IOPub message
of a persisted session).

Run as root with the python image built:  .venv/bin/python benchmarks/monitor_cpu.py
Prints a markdown table and writes benchmarks/results/monitor_cpu.md. Not a pytest.

CPU is read per thread from /proc/<monitor pid>/task/*/stat (user + system), so the
monitor's ZMQ I/O thread counts too. The idle figure is the whole monitor's; it should be 0:
an idle monitor's threads block (cogbox.kernel.stop_signal), they do not poll.
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from cogbox.images.store import ImageStore
from cogbox.jail.policy import parse_policy
from cogbox.kernel.session import start_session

RESULTS = Path(__file__).parent / "results" / "monitor_cpu.md"
_TICK = os.sysconf("SC_CLK_TCK")


def threads_cpu(pid: int) -> dict[str, float]:
    """Seconds of CPU each thread of `pid` used so far, by "tid name"."""
    used: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = raw.split("(", 1)[1].rsplit(")", 1)[0]
        fields = raw.rsplit(")", 1)[1].split()
        used[f"{tid} {name}"] = (int(fields[11]) + int(fields[12])) / _TICK
    return used


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=10.0, help="seconds left idle")
    parser.add_argument("--runs", type=int, default=1000, help="executions of 1+1")
    args = parser.parse_args()
    image = ImageStore().get("python")
    policy = parse_policy("limits:\n  memory: 256m\n  pids: 64\n", source="benchmark policy")
    with (
        tempfile.TemporaryDirectory() as state,
        start_session(image, policy, state_dir=Path(state) / "session") as session,
    ):
        list(session.execute("1+1"))
        kernel = session._kernel
        assert kernel is not None
        pid = int(kernel.provisioner.info()["monitor_pid"])
        time.sleep(1)  # past its start
        start = threads_cpu(pid)
        time.sleep(args.idle)
        idle = spent(start, threads_cpu(pid))
        start = threads_cpu(pid)
        began = time.monotonic()
        for _ in range(args.runs):
            list(session.execute("1+1"))
        took = time.monotonic() - began
        busy = spent(start, threads_cpu(pid))
    idle_ms_per_s = 1000 * sum(idle.values()) / args.idle
    per_run_ms = 1000 * sum(busy.values()) / args.runs
    threads = ", ".join(
        f"{name.split(' ', 1)[1]} {1000 * used / args.runs:.2f}"
        for name, used in sorted(busy.items(), key=lambda item: -item[1])
        if used
    )
    table = "\n".join(
        [
            "# What a kernel's monitor costs",
            "",
            f"`benchmarks/monitor_cpu.py --idle {args.idle:g} --runs {args.runs}`: one "
            "persisted python-image session; CPU of its monitor process (every thread).",
            "",
            f"Machine: {platform.machine()}, Linux {platform.release()}, {os.cpu_count()} cores.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| idle, CPU per second | {idle_ms_per_s:.2f} ms |",
            f"| `1+1` back to back ({args.runs / took:.0f}/s), CPU per execution | "
            f"{per_run_ms:.2f} ms |",
            f"| the same by thread (ms per execution) | {threads} |",
            "",
        ]
    )
    print(table)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()
