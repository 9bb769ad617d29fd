"""How fast a session is ready, how fast code round-trips, and what an idle kernel costs.

Run as root with both images built:  .venv/bin/python benchmarks/kernel_start.py
Prints a markdown table and writes benchmarks/results/kernel_start.md. Not a pytest.

Measured in one run, side by side:
- warm pool: `KernelPool.acquire()` on a full pool, and acquire to the first output (the
  cntk recipe's `kernel.preload` has pooled kernels import cntk ahead of time);
- cold start to first output: `start_session` until the first Stdout of a run that prints
  (for cntk, the run imports cntk first), against the same program run bare in the same
  root filesystem (bubblewrap, `cogbox.images.rootfs.run_in_rootfs`);
- round trip of `1+1` through `Session.execute` (request to Finished, all events read),
  against the image's own kernel started bare in the same root filesystem (bubblewrap, no
  jail, TCP on loopback): what the jail adds, apart from what the image's ipykernel costs;
- cold start of that bare kernel to the first output, as a second reference;
- memory of an idle kernel: the PSS of every process of its jail (smaps_rollup).
"""

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from jail_overhead import bare_command  # type: ignore[import-not-found]  # same folder
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from cogbox.images.plan import JAIL_RUNTIME_DIR
from cogbox.images.rootfs import BASE_ENV, run_in_rootfs
from cogbox.images.store import Image, ImageStore
from cogbox.kernel.events import Stdout
from cogbox.kernel.launch import kernel_command
from cogbox.kernel.pool import KernelPool
from cogbox.kernel.session import Session, start_session

RESULTS = Path(__file__).parent / "results" / "kernel_start.md"
COLD_RUNS = 7
POOL_RUNS = 15
ROUND_TRIPS = 300
FIRST_OUTPUT = {
    "python": "print('ready')",
    "cntk": "import cntk\nprint('ready')",
}


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def first_output(session: Session, code: str) -> None:
    for event in session.execute(code):
        if isinstance(event, Stdout):
            return  # the rest of the run's events are read by the caller's next run
    raise RuntimeError(f"no output from {code!r}")


def cold_start(image: Image) -> float:
    started = time.perf_counter()
    with start_session(image) as session:
        events = session.execute(FIRST_OUTPUT[image.name])
        for event in events:
            if isinstance(event, Stdout):
                took = time.perf_counter() - started
                break
        for _ in events:
            pass
    return took


def bare_start(image: Image) -> float:
    python = kernel_command(image).python
    started = time.perf_counter()
    code = FIRST_OUTPUT[image.name]
    result = run_in_rootfs(image.rootfs, [python, "-c", code], image.env, readonly=True)
    took = time.perf_counter() - started
    if "ready" not in result.stdout:
        raise RuntimeError(f"bare run failed: {result.stderr}")
    return took


class BareKernel:
    """The image's kernel command, run with bubblewrap in its root filesystem: no jail."""

    def __init__(self, image: Image) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="cogbox-bare-"))
        _, info = write_connection_file(str(self.folder / "kernel.json"), ip="127.0.0.1")
        argv = kernel_command(image).argv
        argv[argv.index("-f") + 1] = f"{JAIL_RUNTIME_DIR}/kernel.json"
        # jail_overhead's bare sandbox: read-only root, tmpfs /tmp and /home/work, own PIDs.
        command = bare_command(image, {**BASE_ENV, "HOME": "/home/work", **image.env}, [])
        command += ["--bind", str(self.folder), JAIL_RUNTIME_DIR, *argv]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.client = BlockingKernelClient()
        self.client.load_connection_info(info)
        self.client.start_channels()

    def execute(self, code: str) -> None:
        """Run `code` and read every message until the kernel is idle again."""
        self.client.execute_interactive(code, output_hook=lambda _: None, timeout=60)

    def close(self) -> None:
        self.client.shutdown()
        self.client.stop_channels()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def bare_kernel_start(image: Image) -> float:
    started = time.perf_counter()
    kernel = BareKernel(image)
    try:
        kernel.client.wait_for_ready(60)
        kernel.execute(FIRST_OUTPUT[image.name])
        return time.perf_counter() - started
    finally:
        kernel.close()


def bare_kernel_round_trips(image: Image, count: int) -> list[float]:
    kernel = BareKernel(image)
    try:
        kernel.client.wait_for_ready(60)
        for _ in range(20):
            kernel.execute("1+1")
        times = []
        for _ in range(count):
            started = time.perf_counter()
            kernel.execute("1+1")
            times.append(time.perf_counter() - started)
        return times
    finally:
        kernel.close()


def pool_acquire(pool: KernelPool, code: str) -> tuple[float, float]:
    if not pool.wait_ready(120):
        raise RuntimeError("the pool did not fill")
    started = time.perf_counter()
    session = pool.acquire()
    acquired = time.perf_counter() - started
    first_output(session, code)
    ready = time.perf_counter() - started
    session.shutdown()
    return acquired, ready


def round_trips(session: Session, count: int) -> list[float]:
    for _ in range(20):
        list(session.execute("1+1"))  # warm up
    times = []
    for _ in range(count):
        started = time.perf_counter()
        list(session.execute("1+1"))
        times.append(time.perf_counter() - started)
    return times


def jail_pss_bytes(session: Session) -> int:
    """The proportional set size of every process in the session's jail."""
    kernel = session._kernel  # a benchmark may look inside
    assert kernel is not None and kernel.jail.pid is not None
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total = 0
    todo = [kernel.jail.pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def main() -> None:
    began = time.monotonic()
    load = os.getloadavg()[0]
    store = ImageStore()
    images = {name: store.get(name) for name in ("python", "cntk")}
    rows: list[tuple[str, str, str, str, str]] = []
    notes: list[str] = []

    # Cold start vs bare, interleaved so that host drift hits both alike.
    for name, image in images.items():
        cold: list[float] = []
        bare: list[float] = []
        kernel: list[float] = []
        for _ in range(COLD_RUNS):
            bare.append(bare_start(image))
            cold.append(cold_start(image))
            kernel.append(bare_kernel_start(image))
        target = "<= 500 ms" if name == "python" else "<= 1.2x bare"
        ratio = p50(cold) / p50(bare)
        rows.append(
            (
                f"cold start to first output, {name} (`{FIRST_OUTPUT[name]!r}`)",
                f"{ms(p50(cold))} (p90 {ms(p90(cold))})",
                f"bare {ms(p50(bare))}",
                f"{ratio:.2f}x bare",
                target,
            )
        )
        rows.append(
            (
                f"same, against the image's kernel started bare (no jail), {name}",
                f"{ms(p50(cold))}",
                f"bare kernel {ms(p50(kernel))}",
                f"{p50(cold) / p50(kernel):.2f}x bare kernel",
                "",
            )
        )
        notes.append(
            f"{name}: cold {', '.join(ms(v) for v in cold)}; bare {', '.join(ms(v) for v in bare)}"
            f"; bare kernel {', '.join(ms(v) for v in kernel)}"
        )

    # Warm pool.
    for name, image in images.items():
        with KernelPool(image, size=2) as pool:  # warmed up with the recipe's kernel.preload
            results = [pool_acquire(pool, FIRST_OUTPUT[name]) for _ in range(POOL_RUNS)]
        acquired = [a for a, _ in results]
        ready = [r for _, r in results]
        rows.append(
            (
                f"warm pool: acquire(), {name}",
                f"{ms(p50(acquired))} (p90 {ms(p90(acquired))})",
                "",
                "",
                "p50 <= 50 ms",
            )
        )
        rows.append(
            (
                f"warm pool: acquire() to first output, {name}",
                f"{ms(p50(ready))} (p90 {ms(p90(ready))})",
                "",
                "",
                "",
            )
        )

    # Round trip and idle memory.
    for name, image in images.items():
        with start_session(image) as session:
            times = round_trips(session, ROUND_TRIPS)
            time.sleep(1)
            pss = jail_pss_bytes(session)
        bare_times = bare_kernel_round_trips(image, ROUND_TRIPS)
        rows.append(
            (
                f"round trip of `1+1`, {name}",
                f"{ms(p50(times))} (p90 {ms(p90(times))})",
                f"bare kernel {ms(p50(bare_times))}",
                f"{p50(times) / p50(bare_times):.2f}x bare kernel",
                "p50 <= 5 ms",
            )
        )
        rows.append(
            (
                f"memory of an idle kernel, {name} (PSS of its jail)",
                f"{pss / 2**20:.1f} MiB",
                "",
                "",
                "",
            )
        )

    lines = [
        "# Kernel start, round trip and memory",
        "",
        "| measurement | cogbox | reference | ratio | target |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in rows],
        "",
        "Cold runs (interleaved with bare): " + "; ".join(notes) + ".",
        "",
        f"Machine: {platform.node()}, kernel {platform.release()}, {os.cpu_count()} cores, load "
        f"average {load:.1f} at the start (other work on the host adds noise to every "
        f"figure); total benchmark time {time.monotonic() - began:.0f} s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
