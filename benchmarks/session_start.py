"""Session start through the service: a warm-pool kernel against a cold start, side by side.

Two `cogbox serve` processes run at once on separate databases: one with the default warm
pools (`--pool python=1 --pool cntk=1`), one with none. For each image, runs alternate
between them: `POST /v1/sessions`, then the image's first-output code (cntk: `import cntk`
first) until its stdout arrives, then the session is destroyed and the pooled service's
pool is allowed to refill (`GET /v1/pools`). Also measured in the same run: the same code
run bare (`python -c`, bubblewrap, same root filesystem), the issue's reference.

    sudo .venv/bin/python benchmarks/session_start.py [--runs 7]

Writes benchmarks/results/session_start.md.
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

from kernel_start import FIRST_OUTPUT, bare_start  # type: ignore[import-not-found]  # same folder

from cogbox.images.store import ImageStore
from tests.service.support import Client, Service, stdout_of

RESULTS = Path(__file__).parent / "results" / "session_start.md"
IMAGES = ["python", "cntk"]


def session_to_first_output(client: Client, image: str) -> float:
    started = time.perf_counter()
    created = client.create(image)
    result = client.execute(created["id"], FIRST_OUTPUT[image])
    took = time.perf_counter() - started
    client.request("DELETE", f"/v1/sessions/{created['id']}")
    if stdout_of(result) != "ready\n":
        raise RuntimeError(f"unexpected output: {result}")
    return took


def wait_for_pool(client: Client, image: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pools = client.request("GET", "/v1/pools").json()["pools"]
        if any(p["image"] == image and p["ready"] >= p["size"] for p in pools):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the {image} pool did not fill")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    store = ImageStore()
    images = {name: store.get(name) for name in IMAGES}
    began = time.monotonic()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as pooled_dir, tempfile.TemporaryDirectory() as cold_dir:
        pooled = Service(Path(pooled_dir), f"sqlite:///{pooled_dir}/cogbox.db").start(
            "--pool", "python=1", "--pool", "cntk=1"
        )
        cold = Service(Path(cold_dir), f"sqlite:///{cold_dir}/cogbox.db").start(
            "--pool", "python=0", "--pool", "cntk=0"
        )
        try:
            to_pooled, to_cold = pooled.keypair(), cold.keypair()
            rows = []
            for name, image in images.items():
                times: dict[str, list[float]] = {"pool": [], "cold": [], "bare": []}
                for _ in range(runs):
                    wait_for_pool(to_pooled, name)
                    times["pool"].append(session_to_first_output(to_pooled, name))
                    times["cold"].append(session_to_first_output(to_cold, name))
                    times["bare"].append(bare_start(image))
                rows.append((name, {k: statistics.median(v) for k, v in times.items()}, times))
        finally:
            pooled.stop()
            cold.stop()
    lines = [
        "# Session start through the service",
        "",
        f"`benchmarks/session_start.py --runs {runs}`: `POST /v1/sessions` to the first "
        "output of the first run (python: `print('ready')`; cntk: `import cntk` then the "
        "print), through the API; a service with warm pools against one without, "
        "interleaved; p50 of each.",
        "",
        "| image | warm pool | cold start | bare `python -c` | pool vs bare | cold vs bare |",
        "|---|---|---|---|---|---|",
    ]
    for name, p50, _ in rows:
        lines.append(
            f"| {name} | {p50['pool'] * 1e3:.1f} ms | {p50['cold'] * 1e3:.1f} ms | "
            f"{p50['bare'] * 1e3:.1f} ms | {p50['pool'] / p50['bare']:.2f}x | "
            f"{p50['cold'] / p50['bare']:.2f}x |"
        )
    lines += ["", "All runs (ms):", ""]
    for name, _, times in rows:
        for kind, values in times.items():
            lines.append(f"- {name} {kind}: " + ", ".join(f"{v * 1e3:.0f}" for v in values))
    lines += [
        "",
        f"Machine: {platform.machine()}, Linux {platform.release()}, {os.cpu_count()} cores, "
        f"load average {load:.1f} at the start; total {time.monotonic() - began:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
