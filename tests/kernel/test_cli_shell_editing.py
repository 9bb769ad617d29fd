"""`cogbox shell` at a terminal (driven through a pty): line editing, history kept across
shells, Tab completion from the kernel's namespace. (`--endpoint`: tests/service/
test_cli_session_files.py.)"""

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from cogbox.cli.line_editing import fit_matches
from cogbox.images.store import Image

CTRL_A, CTRL_D, UP, TAB = "\x01", "\x04", "\x1b[A", "\t"


def test_fit_matches_cuts_the_kernels_matches_to_readlines_word() -> None:
    line = "print(os.pa"
    assert fit_matches(["os.path", "os.pathsep"], 6, line, 9) == ["path", "pathsep"]
    assert fit_matches(["path"], 9, line, 9) == ["path"]
    assert fit_matches(["other.path"], 6, line, 9) == []


class _Terminal:
    """A process on a pty: what it printed so far, and keys to send it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.seen = ""

    def wait_for(self, pattern: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {pattern!r} in {self.seen[-2000:]!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the process ended
                    assert re.search(pattern, self.seen), self.seen[-2000:]

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> int:
        try:
            return self.process.wait(30)
        finally:
            os.close(self.master)


def _shell(tmp_path: Path, *args: str) -> _Terminal:
    env = {**os.environ, "COGBOX_SHELL_HISTORY": str(tmp_path / "history"), "TERM": "xterm"}
    env.pop("COGBOX_ENDPOINT", None)
    return _Terminal([sys.executable, "-m", "cogbox.cli", "shell", *args], env)


def test_shell_edits_lines_recalls_history_and_completes_names(
    python_image: Image, tmp_path: Path
) -> None:
    term = _shell(tmp_path, "--image", "python")
    term.wait_for(r"In \[1\]: ")
    term.send("x = 41\r")
    term.wait_for(r"In \[2\]: ")
    term.send("rint(x)" + CTRL_A + "p\r")  # Ctrl-A: to the start of the line, then insert
    term.wait_for(r"\r\n41\r\n.*In \[3\]: ")
    term.send(UP + "\r")  # the previous line again
    term.wait_for(r"\r\n41\r\n(.|\n)*\r\n41\r\n.*In \[4\]: ")
    term.send("import collections\r")
    term.wait_for(r"In \[5\]: ")
    term.send("print(collections.Ordere" + TAB)
    time.sleep(1)  # the kernel's completion
    term.send(".__name__)\r")
    term.wait_for(r"\r\nOrderedDict\r\n.*In \[6\]: ")
    term.send(CTRL_D)
    assert term.close() == 0
    history = (tmp_path / "history").read_text().splitlines()
    assert history[:2] == ["x = 41", "print(x)"], history


def test_history_carries_over_to_the_next_shell(python_image: Image, tmp_path: Path) -> None:
    (tmp_path / "history").write_text("print('from before')\n")
    term = _shell(tmp_path, "--image", "python")
    term.wait_for(r"In \[1\]: ")
    term.send(UP + "\r")
    term.wait_for(r"\r\nfrom before\r\n.*In \[2\]: ")
    term.send(CTRL_D)
    assert term.close() == 0
