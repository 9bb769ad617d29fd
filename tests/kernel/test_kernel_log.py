"""The kernel's own log: a drained pipe into a capped, rotated host file."""

import os
import threading
from pathlib import Path

from cogbox.kernel.kernel_log import KernelLog


def test_a_flood_is_drained_without_blocking_and_kept_within_two_caps(tmp_path: Path) -> None:
    log = KernelLog(tmp_path / "kernel.log", cap=64 << 10)
    writer = log.writer
    done = threading.Event()

    def flood() -> None:
        for _ in range(256):  # 16 MiB, far past the pipe's buffer
            os.write(writer, b"x" * (64 << 10))
        os.write(writer, b"the end\n")
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(30), "the writer blocked: the log is not drained"
    log.stop()
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert len(sizes) == 2 and max(sizes) <= 64 << 10
    assert log.tail(100).endswith("the end")


def test_tail_reads_across_the_rotation(tmp_path: Path) -> None:
    log = KernelLog(tmp_path / "kernel.log", cap=10)
    os.write(log.writer, b"0123456789abc")
    log.stop()
    assert log.tail(8) == "56789abc"
    assert log.tail(100) == "0123456789abc"


def test_the_reader_ends_when_the_writers_are_gone(tmp_path: Path) -> None:
    log = KernelLog(tmp_path / "kernel.log")
    os.write(log.writer, b"started\n")
    log.close_writer()
    log._thread.join(5)
    assert not log._thread.is_alive() and log.tail(100) == "started"
