"""The Slurm dev cluster's costs: up and down, `srun` to output, `sbatch` to running, and a
jailed command's first output inside a Slurm step beside the same command run locally.

    sudo .venv/bin/python benchmarks/slurm_dev.py [--runs 5]

Interleaved per run: down, up (3 nodes), `srun -N1 hostname` to its exit, a job submitted
through cogbox.cluster.slurm until squeue says RUNNING (polled every 20 ms), `cogbox jail run
--image python -- python -c "print('ready')"` to its first line directly and inside
`srun --mem=1G`. Writes benchmarks/results/slurm_dev.md; leaves the cluster down.
Needs root, slurm-wlm and munge, and the built `python` image in COGBOX_DATA_DIR.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cogbox.cluster.slurm import JobRequest, SlurmClient

REPO = Path(__file__).resolve().parents[1]

RESULTS = Path(__file__).parent / "results" / "slurm_dev.md"
SLURM_DEV = str(REPO / "scripts" / "slurm-dev")
COGBOX = str(Path(sys.executable).with_name("cogbox"))
JAIL = [COGBOX, "jail", "run", "--image", "python", "--", "python", "-c", "print('ready')"]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env, timeout=120)
    return time.perf_counter() - started


def to_first_line(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - started
    proc.wait(timeout=60)
    if line != b"ready\n":
        raise RuntimeError(f"{argv[0]} printed {line!r}")
    return took


def to_running(client: SlurmClient) -> float:
    started = time.perf_counter()
    job_id = client.submit(JobRequest(script="#!/bin/sh\nsleep 30\n", name="bench", cpus=1))
    while client.job(job_id).state != "RUNNING":
        time.sleep(0.02)
    took = time.perf_counter() - started
    client.cancel(job_id)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    load = os.getloadavg()[0]
    began = time.monotonic()
    times: dict[str, list[float]] = {
        k: [] for k in ("up", "down", "srun", "sbatch", "jail local", "jail in srun")
    }
    for _ in range(runs):
        times["down"].append(timed([SLURM_DEV, "down"]))
        times["up"].append(timed([SLURM_DEV, "up", "3"]))
        conf = Path(
            subprocess.run([SLURM_DEV, "status"], capture_output=True, text=True, check=True)
            .stdout.split("SLURM_CONF=")[1]
            .strip()
        )
        env = {**os.environ, "SLURM_CONF": str(conf)}
        times["srun"].append(timed(["srun", "-N1", "hostname"], env))
        times["sbatch"].append(to_running(SlurmClient(conf)))
        times["jail local"].append(to_first_line(JAIL, env))
        times["jail in srun"].append(to_first_line(["srun", "--mem=1G", *JAIL], env))
    subprocess.run([SLURM_DEV, "down"], check=True, capture_output=True)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "# The Slurm dev cluster (scripts/slurm-dev, 3 nodes)",
        "",
        f"`benchmarks/slurm_dev.py --runs {runs}`: interleaved, p50 of each. up/down: "
        "`scripts/slurm-dev up 3` (to 3 idle nodes) and `down`; srun: `srun -N1 hostname` to "
        "its exit; sbatch: submit through cogbox.cluster.slurm until squeue says RUNNING; jail: "
        "`cogbox jail run --image python` to its first output line, directly and inside "
        "`srun --mem=1G` (the jail nested in the step's cgroups).",
        "",
        "| up | down | srun | sbatch to running | jail local | jail in srun |",
        "|---|---|---|---|---|---|",
        "| "
        + " | ".join(
            f"{p50[k] * 1e3:.0f} ms"
            for k in ("up", "down", "srun", "sbatch", "jail local", "jail in srun")
        )
        + " |",
        "",
        "All runs (ms):",
        "",
        *(f"- {k}: " + ", ".join(f"{v * 1e3:.0f}" for v in vs) for k, vs in times.items()),
        "",
        f"Machine: {platform.machine()}, Linux {platform.release()}, {os.cpu_count()} cores, "
        f"load average {load:.1f} at the start; total {time.monotonic() - began:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
