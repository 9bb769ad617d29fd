"""The CLI's start: `cogbox --help` and `cogbox session ls` (through a service), wall clock.

One `cogbox serve` is started on a temp SQLite database with no warm pools (`--pool python=0
--pool cntk=0`, so it starts at once and runs no kernel) and one keypair. Each run times, in
turn, `python -c pass` (the interpreter's own start, the floor), `cogbox --help` and
`cogbox session ls` (COGBOX_ENDPOINT and the keypair in its environment: one signed request,
an empty table); the median of the runs is reported. Target (issue 10, item 6): both commands
under 300 ms. Needs no root: no session is started.

    .venv/bin/python benchmarks/cli_start.py [--runs 5]

Writes benchmarks/results/cli_start.md. To measure another checkout's CLI with the same
venv, put its src first: `PYTHONPATH=/path/to/checkout/src .venv/bin/python benchmarks/...`.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.support import Service

RESULTS = Path(__file__).parent / "results" / "cli_start.md"
TARGET_MS = 300.0
COGBOX = str(Path(sys.executable).parent / "cogbox")  # the installed console script


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Milliseconds from spawning `argv` to its exit; it must succeed."""
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    began = time.monotonic()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cogbox-cli-start-") as tmp:
        directory = Path(tmp)
        service = Service(directory, f"sqlite:///{directory / 'cogbox.db'}")
        service.start("--pool", "python=0", "--pool", "cntk=0")
        try:
            client = service.keypair()
            env = {
                **os.environ,
                "COGBOX_ENDPOINT": service.url,
                "COGBOX_ACCESS_KEY": client.access_key,
                "COGBOX_SECRET_KEY": client.secret_key,
            }
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "cogbox --help": [COGBOX, "--help"],
                "cogbox session ls": [COGBOX, "session", "ls"],
            }
            timed(commands["cogbox session ls"], env)  # warm the page cache and the service
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):  # interleaved: a load spike hits every command alike
                for name, argv in commands.items():
                    times[name].append(timed(argv, env))
        finally:
            service.stop()

    lines = [
        "# CLI start",
        "",
        f"Median of {args.runs} runs, interleaved, wall clock from spawn to exit "
        "(`.venv/bin/python benchmarks/cli_start.py`). `cogbox session ls` goes through a "
        "`cogbox serve` on loopback (SQLite, no pools, no sessions). "
        f"Target: under {TARGET_MS:.0f} ms.",
        "",
        "| command | median ms | min ms | max ms | target |",
        "|---|---:|---:|---:|---|",
    ]
    for name, samples in times.items():
        median = statistics.median(samples)
        verdict = (
            "-" if name.startswith("python") else ("met" if median < TARGET_MS else "**missed**")
        )
        lines.append(
            f"| `{name}` | {median:.0f} | {min(samples):.0f} | {max(samples):.0f} | {verdict} |"
        )
    lines += [
        "",
        f"Machine: {platform.machine()}, Linux {platform.release()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load:.1f} at the start; "
        f"total {time.monotonic() - began:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
