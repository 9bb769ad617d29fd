"""What IPython's history costs a jailed kernel: written per cell (IPython's default) against
in batches of `HISTORY_BATCH_CELLS` (cogbox's kernels), interleaved by round.

Run as root with the python image built:  .venv/bin/python benchmarks/kernel_history.py
Prints a markdown table and writes benchmarks/results/kernel_history.md. Not a pytest.

One session per variant and round runs `print(...)` back to back. Counted: the CPU of the
session's kernel processes (/proc/<pid>/stat) and of the whole machine (/proc/stat: the
workdir's loop device does its part of a commit outside the kernel), per cell.
"""

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cogbox.kernel.launch as launch
from cogbox.images.store import Image, ImageStore
from cogbox.jail.policy import parse_policy
from cogbox.kernel.launch import HISTORY_BATCH_CELLS
from cogbox.kernel.session import start_session

sys.path.insert(0, str(Path(__file__).parent))
from peer_gateway import (  # type: ignore[import-not-found]  # same folder
    cpu_seconds,
    kernel_pids,
    machine_cpu_seconds,
)

RESULTS = Path(__file__).parent / "results" / "kernel_history.md"
_OPTION = "--HistoryManager.db_cache_size="
PER_CELL = f"{_OPTION}0"  # IPython's default, in place of cogbox's (traitlets takes one)


def measure(image: Image, cells: int, extra: list[str]) -> tuple[float, float, float]:
    """(cells/s, kernel CPU ms per cell, machine CPU ms per cell) of one fresh session."""
    command = launch.kernel_command

    def with_extra(image: Image) -> launch.KernelCommand:
        made = command(image)
        if not extra:
            return made
        kept = [arg for arg in made.argv if not arg.startswith(_OPTION)]
        return dataclasses.replace(made, argv=kept + extra)

    launch.kernel_command = with_extra  # type: ignore[assignment]
    policy = parse_policy("limits:\n  memory: 512m\n  pids: 64\n", source="benchmark policy")
    before_start = set(kernel_pids())
    try:
        with (
            tempfile.TemporaryDirectory() as state,
            start_session(image, policy, state_dir=Path(state) / "session") as session,
        ):
            list(session.execute("1+1"))
            time.sleep(1)
            pids = [pid for pid in kernel_pids() if pid not in before_start]
            kernel = {pid: cpu_seconds(pid) for pid in pids}
            machine = machine_cpu_seconds()
            began = time.monotonic()
            for number in range(cells):
                list(session.execute(f"print('cell {number}', {number} * {number})"))
            took = time.monotonic() - began
            machine = machine_cpu_seconds() - machine
            used = sum(cpu_seconds(pid) - kernel[pid] for pid in pids)
    finally:
        launch.kernel_command = command
    return cells / took, 1000 * used / cells, 1000 * machine / cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=500, help="cells per session")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    image = ImageStore().get("python")
    variants = {"per cell (IPython's default)": [PER_CELL], f"batched ({HISTORY_BATCH_CELLS})": []}
    found: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    for round_number in range(args.rounds):
        order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
        for name in order:
            found[name].append(measure(image, args.cells, variants[name]))
            print(name, found[name][-1], file=sys.stderr, flush=True)

    def span(name: str, index: int) -> str:
        values = [result[index] for result in found[name]]
        return f"{min(values):.2f}-{max(values):.2f}"

    def mean(name: str, index: int) -> float:
        return statistics.mean(result[index] for result in found[name])

    per_cell, batched = variants
    lines = [
        "# What IPython's history costs a jailed kernel",
        "",
        f"`benchmarks/kernel_history.py --cells {args.cells} --rounds {args.rounds}`: one "
        "python-image session per variant and round, `print` cells back to back; ranges over "
        "rounds, the ratio of means.",
        "",
        f"Machine: {platform.machine()}, Linux {platform.release()}, {os.cpu_count()} cores.",
        "",
        f"| measure | {per_cell} | {batched} | batched / per cell |",
        "|---|---|---|---|",
    ]
    for label, index in (
        ("cells/s", 0),
        ("kernel CPU per cell (ms)", 1),
        ("whole machine's CPU per cell (ms)", 2),
    ):
        ratio = mean(batched, index) / mean(per_cell, index)
        lines.append(
            f"| {label} | {span(per_cell, index)} | {span(batched, index)} | {ratio:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
