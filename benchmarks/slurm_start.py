"""Session start through Slurm beside the local backend: create to first output, in one run.

Three `cogbox serve` processes at once, on separate databases: `--backend slurm` on the dev
cluster (scripts/slurm-dev, 3 nodes; started here if it is not up), and the local backend
with its warm pools and without. For each image, runs alternate between them: `POST
/v1/sessions` (memory 1g: a dev node has 1500 MB, and the same figure for the local cold
start; the pooled one keeps the image's default, or it would start cold), then the image's
first-output code (cntk: `import cntk` first) until its stdout arrives, then the session is
destroyed. For the Slurm sessions the session's own events split the time: Slurm placing
the job (created to `starting placed`), the job's agent and kernel starting on the node
(to `running`), and the first run.

    sudo .venv/bin/python benchmarks/slurm_start.py [--runs 3]

Writes benchmarks/results/slurm_start.md. Needs root, slurm-wlm and munge, and the built
`python` and `cntk` images in COGBOX_DATA_DIR. No warm pool on Slurm nodes exists yet.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel_start import FIRST_OUTPUT  # type: ignore[import-not-found]  # same folder

from cogbox.images.store import ImageStore
from tests.service.support import Client, Service, stdout_of

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "slurm_start.md"
IMAGES = ["python", "cntk"]
SLURM_DEV = str(REPO / "scripts" / "slurm-dev")


def to_first_output(client: Client, image: str, **body: object) -> tuple[float, dict[str, float]]:
    """Seconds from the create to the first output, and the session's phases (seconds)."""
    started = time.perf_counter()
    created = client.create(image, **body)
    result = client.execute(created["id"], FIRST_OUTPUT[image])
    took = time.perf_counter() - started
    events = client.request("GET", f"/v1/sessions/{created['id']}/events").json()["events"]
    client.request("DELETE", f"/v1/sessions/{created['id']}")
    if stdout_of(result) != "ready\n":
        raise RuntimeError(f"unexpected output: {result}")
    at = {e["kind"] + (":" + e["reason"] if e["reason"] else ""): _t(e["at"]) for e in events}
    phases: dict[str, float] = {}
    if "starting:placed" in at:
        phases["placing"] = at["starting:placed"] - at["created"]
        phases["agent+kernel"] = at["running:started"] - at["starting:placed"]
        phases["first run"] = took - (at["running:started"] - at["created"])
    return took, phases


def _t(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    store = ImageStore()
    for name in IMAGES:
        store.get(name)
    up = subprocess.run([SLURM_DEV, "up", "3"], capture_output=True, text=True, check=True)
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if line
    )
    began = time.monotonic()
    load = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory() as slurm_dir,
        tempfile.TemporaryDirectory() as pooled_dir,
        tempfile.TemporaryDirectory() as cold_dir,
    ):
        slurm = Service(
            Path(slurm_dir), f"sqlite:///{slurm_dir}/cogbox.db", extra_env=exports
        ).start("--backend", "slurm", "--slurm-partition", "cogbox")
        pooled = Service(Path(pooled_dir), f"sqlite:///{pooled_dir}/cogbox.db").start(
            "--pool", "python=1", "--pool", "cntk=1"
        )
        cold = Service(Path(cold_dir), f"sqlite:///{cold_dir}/cogbox.db").start(
            "--pool", "python=0", "--pool", "cntk=0"
        )
        try:
            to_slurm, to_pooled, to_cold = slurm.keypair(), pooled.keypair(), cold.keypair()
            rows = []
            for name in IMAGES:
                times: dict[str, list[float]] = {"slurm": [], "pool": [], "cold": []}
                phases: dict[str, list[float]] = {}
                for _ in range(runs):
                    took, parts = to_first_output(to_slurm, name, memory="1g")
                    times["slurm"].append(took)
                    for part, value in parts.items():
                        phases.setdefault(part, []).append(value)
                    time.sleep(2)  # the local pool refills meanwhile
                    times["pool"].append(to_first_output(to_pooled, name)[0])
                    times["cold"].append(to_first_output(to_cold, name, memory="1g")[0])
                p50 = {k: statistics.median(v) for k, v in times.items()}
                rows.append(
                    (name, p50, times, {k: statistics.median(v) for k, v in phases.items()})
                )
        finally:
            slurm.stop()
            pooled.stop()
            cold.stop()
    lines = [
        "# Session start through Slurm beside the local backend",
        "",
        f"`benchmarks/slurm_start.py --runs {runs}`: `POST /v1/sessions` to the first output "
        "of the first run (python: `print('ready')`; cntk: `import cntk` then the print), "
        "through the native API; `serve --backend slurm` on the 3-node dev cluster (memory "
        "1g), the local backend with a warm pool (the image's memory) and cold (memory 1g), "
        "interleaved; p50 of each. No warm pool on Slurm nodes exists yet.",
        "",
        "| image | slurm | local, warm pool | local, cold | slurm vs pool | slurm vs cold |",
        "|---|---|---|---|---|---|",
    ]
    for name, p50, _, _ in rows:
        lines.append(
            f"| {name} | {p50['slurm'] * 1e3:.0f} ms | {p50['pool'] * 1e3:.0f} ms | "
            f"{p50['cold'] * 1e3:.0f} ms | {p50['slurm'] / p50['pool']:.1f}x | "
            f"{p50['slurm'] / p50['cold']:.1f}x |"
        )
    lines += ["", "Where a Slurm session's time goes (p50, from its events):", ""]
    for name, _, _, parts in rows:
        lines.append(
            f"- {name}: "
            + ", ".join(f"{part} {value * 1e3:.0f} ms" for part, value in parts.items())
        )
    lines += ["", "All runs (ms):", ""]
    for name, _, times, _ in rows:
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
