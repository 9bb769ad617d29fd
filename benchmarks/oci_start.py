"""`podman run` of the exported image beside a cogbox session start, in one run; and sizes.

For each image, runs interleave: `podman run --rm` with the flags `cogbox policy render
--format docker-run` prints (seccomp profile included) until the first-output code prints
`ready`; a cogbox session through the service without a warm pool (cold) and with one
(pool), to the same first output. Also the sizes: the rootfs, the layer as tar, the
compressed layer, the OCI and docker archives, and the export times.

    sudo .venv/bin/python benchmarks/oci_start.py [--runs 5]

Writes benchmarks/results/oci_start.md. podman's state lives in a scratch folder, removed
after.
"""

import argparse
import json
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

from kernel_start import FIRST_OUTPUT  # type: ignore[import-not-found]  # same folder
from session_start import (  # type: ignore[import-not-found]  # same folder
    session_to_first_output,
    wait_for_pool,
)

from cogbox.images.oci import export_archive, oci_layout, repository_name
from cogbox.images.store import Image, ImageStore
from cogbox.jail.engine_flags import render_engine_flags
from cogbox.jail.policy import load_policy
from cogbox.jail.seccomp import render_docker_profile
from cogbox.sizes import format_size
from tests.images import engines
from tests.service.support import Service

RESULTS = Path(__file__).parent / "results" / "oci_start.md"
IMAGES = ["python", "cntk"]


def podman_to_first_output(podman: list[str], ref: str, flags: list[str], code: str) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*podman, "run", "--rm", *flags, ref, "python", "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - started
    proc.wait()
    if line != "ready\n":
        raise RuntimeError(f"podman run printed {line!r}")
    return took


def sizes(image: Image, scratch: Path) -> dict[str, float]:
    started = time.perf_counter()
    exported = oci_layout(image, force=True)
    layout_s = time.perf_counter() - started
    row = {
        "rootfs": image.size_bytes,
        "tar": exported.layer_tar_bytes,
        "layer": exported.layer_bytes,
        "layout_s": layout_s,
    }
    for fmt in ("oci", "docker-archive"):
        archive = scratch / f"{image.name}-{fmt}.tar"
        started = time.perf_counter()
        export_archive(image, fmt, archive)  # type: ignore[arg-type]
        row[f"{fmt}_s"] = time.perf_counter() - started
        row[fmt] = archive.stat().st_size
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    store = ImageStore()
    images = {name: store.get(name) for name in IMAGES}
    began = time.monotonic()
    load = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="cogbox-oci-bench-", dir="/var/tmp"))
    state = scratch / "containers"
    podman = engines.podman_argv(state)
    rows = []
    try:
        size_rows = {name: sizes(image, scratch) for name, image in images.items()}
        with tempfile.TemporaryDirectory() as pooled_dir, tempfile.TemporaryDirectory() as cold:
            pooled = Service(Path(pooled_dir), f"sqlite:///{pooled_dir}/cogbox.db").start(
                "--pool", "python=1", "--pool", "cntk=1"
            )
            cold_service = Service(Path(cold), f"sqlite:///{cold}/cogbox.db").start(
                "--pool", "python=0", "--pool", "cntk=0"
            )
            try:
                to_pooled, to_cold = pooled.keypair(), cold_service.keypair()
                for name, image in images.items():
                    subprocess.run(
                        [*podman, "load", "-q", "-i", str(scratch / f"{name}-oci.tar")],
                        check=True,
                        capture_output=True,
                    )
                    policy = load_policy(image.policy_path)
                    profile = scratch / f"{name}-seccomp.json"
                    profile.write_text(json.dumps(render_docker_profile(policy)))
                    flags = render_engine_flags(policy, seccomp_profile=str(profile))
                    ref = f"localhost/{repository_name(image)}"
                    times: dict[str, list[float]] = {"podman": [], "cold": [], "pool": []}
                    for _ in range(runs):
                        code = FIRST_OUTPUT[name]
                        times["podman"].append(podman_to_first_output(podman, ref, flags, code))
                        times["cold"].append(session_to_first_output(to_cold, name))
                        wait_for_pool(to_pooled, name)
                        times["pool"].append(session_to_first_output(to_pooled, name))
                    rows.append((name, {k: statistics.median(v) for k, v in times.items()}, times))
            finally:
                pooled.stop()
                cold_service.stop()
    finally:
        engines.reset_containers_storage(state)
        shutil.rmtree(scratch, ignore_errors=True)
    lines = [
        "# `podman run` of the exported image beside a cogbox session start",
        "",
        f"`benchmarks/oci_start.py --runs {runs}`: time to the first output (python: "
        "`print('ready')`; cntk: `import cntk` then the print). podman: `podman run --rm` "
        "of the image from `cogbox image export` with the `--format docker-run` flags and "
        "seccomp profile (runc, overlay, cgroupfs); cogbox: `POST /v1/sessions` then the "
        "code through the API, without a warm pool (cold) and with one (pool). Interleaved; "
        "p50 of each.",
        "",
        "| image | podman run | cogbox cold | cogbox pool | podman vs cold |",
        "|---|---|---|---|---|",
    ]
    for name, p50, _ in rows:
        lines.append(
            f"| {name} | {p50['podman'] * 1e3:.0f} ms | {p50['cold'] * 1e3:.0f} ms | "
            f"{p50['pool'] * 1e3:.0f} ms | {p50['podman'] / p50['cold']:.2f}x |"
        )
    lines += ["", "All runs (ms):", ""]
    for name, _, times in rows:
        for kind, values in times.items():
            lines.append(f"- {name} {kind}: " + ", ".join(f"{v * 1e3:.0f}" for v in values))
    lines += [
        "",
        "## Sizes and export times",
        "",
        "| image | rootfs (du) | layer tar | compressed layer | OCI archive | docker archive "
        "| layout | oci archive | docker archive |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in size_rows.items():
        lines.append(
            f"| {name} | {format_size(int(s['rootfs']))} | {format_size(int(s['tar']))} | "
            f"{format_size(int(s['layer']))} | {format_size(int(s['oci']))} | "
            f"{format_size(int(s['docker-archive']))} | {s['layout_s']:.1f} s | "
            f"{s['oci_s']:.1f} s | {s['docker-archive_s']:.1f} s |"
        )
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
