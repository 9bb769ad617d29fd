"""`cogbox run`: the seed's CNTK snippets, live output streams and exit statuses."""

import subprocess
import sys
from pathlib import Path

import pytest

from cogbox.images.store import Image
from tests.seed import CNTK_MINUS, CNTK_SQUARED_ERROR, HELLO_WORLD, KERAS_BACKEND

# The command as the lead registers it (`cogbox run`), called through its module so the
# tests do not depend on the registration.
COGBOX_RUN = [sys.executable, "-c", "from cogbox.cli.run import run; run()"]


def cogbox_run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COGBOX_RUN, *args], input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (HELLO_WORLD, "hello world"),
        (CNTK_SQUARED_ERROR, "[ 29.]"),
        (CNTK_MINUS, "[-3. -3. -3.]"),
    ],
    ids=["hello-world", "cntk-squared-error", "cntk-minus"],
)
def test_seed_snippet_prints_expected_output(
    cntk_image: Image, snippet: str, expected: str
) -> None:
    result = cogbox_run("--image", "cntk", "-c", snippet)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_seed_keras_snippet_uses_the_cntk_backend(cntk_image: Image) -> None:
    result = cogbox_run("--image", "cntk", "-c", KERAS_BACKEND)
    assert result.returncode == 0, result.stderr
    assert (result.stdout.strip().splitlines()[-1], "Using CNTK backend" in result.stderr) == (
        "keras",
        True,
    )


def test_cntk_image_captures_output_written_to_fd_1(cntk_image: Image) -> None:
    # What CNTK's C++ prints goes straight to fd 1; the wurlitzer extension forwards it.
    result = cogbox_run("--image", "cntk", "-c", "import os\nos.write(1, b'straight to fd 1\\n')")
    assert "straight to fd 1" in result.stdout


def test_python2_kernel_waits_for_flushes_without_polling(cntk_image: Image) -> None:
    # Python 2's timed Event.wait polls with sleeps; the kernel is started with an untimed
    # flush wait, and the helper name it used is not left in the user's namespace.
    code = (
        "import ipykernel.iostream as i\n"
        "print('%s %s' % (i.OutStream.flush_timeout, '_io' in dir()))"
    )
    proc = cogbox_run("--image", "cntk", "-c", code)
    assert proc.stdout == "None False\n", proc.stderr


def test_uncaught_exception_exits_1_with_the_traceback(python_image: Image) -> None:
    result = cogbox_run("--image", "python", "-c", "print('before')\nraise KeyError('nope')")
    assert (result.returncode, result.stdout) == (1, "before\n")
    assert "KeyError: 'nope'" in result.stderr


def test_cell_answers_input_from_stdin(python_image: Image) -> None:
    # Was run from a FILE: a FILE now runs as a script (tests/kernel/test_cli_script.py),
    # whose stdin is empty like any batch command's; a cell still reads input() from ours.
    result = cogbox_run(
        "--image", "python", "-c", "print('hello', input('who? '))", stdin="world\n"
    )
    assert (result.returncode, result.stdout) == (0, "who? hello world\n")


def test_time_limit_exits_124_with_a_message(python_image: Image) -> None:
    result = cogbox_run("--image", "python", "--timeout", "1", "-c", "import time; time.sleep(30)")
    assert result.returncode == 124
    assert "time limit of 1 s" in result.stderr


def test_kernel_killed_for_memory_exits_3_naming_the_limit(
    python_image: Image, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text("limits:\n  memory: 256m\n  workdir_quota: 64m\n")
    result = cogbox_run(
        "--image", "python", "--policy", str(policy), "-c", "hog = b'x' * (1 << 30)"
    )
    assert result.returncode == 3
    assert "the kernel died: killed: out of memory (memory limit 256 MiB)" in result.stderr


def test_code_and_file_together_are_a_usage_error(python_image: Image, tmp_path: Path) -> None:
    result = cogbox_run("-c", "1", str(tmp_path / "x.py"))
    assert result.returncode == 2 and "either -c CODE or FILE" in result.stderr
