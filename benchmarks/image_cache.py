"""How long `cogbox image build NAME` takes when the recipe is unchanged (target: < 2 s).

Run: .venv/bin/python benchmarks/image_cache.py [NAME ...]  (as root; builds first if needed)
Writes benchmarks/results/image_cache.md.
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 5
RESULTS = Path(__file__).parent / "results" / "image_cache.md"


def _build(name: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cogbox.cli", "image", "build", name],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main(names: list[str]) -> None:
    rows = [
        "| image | first call (s) | cached rebuild, median of 5 (s) | max (s) |",
        "| --- | --- | --- | --- |",
    ]
    for name in names:
        first = _build(name)
        cached = [_build(name) for _ in range(RUNS)]
        rows.append(
            f"| {name} | {first:.2f} | {statistics.median(cached):.2f} | {max(cached):.2f} |"
        )
    table = "\n".join(rows)
    print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(f"# Cached image builds\n\n`{' '.join(sys.argv)}`\n\n{table}\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["cntk", "python"])
