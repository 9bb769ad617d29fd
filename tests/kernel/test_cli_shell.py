"""`cogbox shell`: cells keep state, Ctrl-C interrupts a cell and the session lives on."""

import signal
import subprocess
import sys
import time

from cogbox.cli.shell import needs_more
from cogbox.images.store import Image


def test_needs_more_follows_blocks_and_brackets() -> None:
    assert needs_more(["for i in range(3):"])
    assert needs_more(["for i in range(3):", "    print(i)"])
    assert not needs_more(["for i in range(3):", "    print(i)", ""])
    assert needs_more(["x = [1,"])
    assert not needs_more(["x = [1,", "2]"])
    assert not needs_more(["print(1)"])


def test_shell_keeps_state_and_survives_an_interrupt(python_image: Image) -> None:
    shell = subprocess.Popen(
        [sys.executable, "-m", "cogbox.cli", "shell", "--image", "python"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert shell.stdin is not None and shell.stderr is not None
    while "ready" not in shell.stderr.readline():
        assert shell.poll() is None, "the shell ended before its session was ready"
    shell.stdin.write("x = 21\nprint(x * 2)\nimport time\nwhile True: time.sleep(0.05)\n")
    shell.stdin.flush()
    time.sleep(2)
    shell.send_signal(signal.SIGINT)
    time.sleep(1)
    out, err = shell.communicate("for i in range(2):\n    print('i', i)\n\nprint(x)\n", timeout=60)
    assert out.split() == ["42", "i", "0", "i", "1", "21"], err
    assert "interrupted" in err and shell.returncode == 0
