"""`cogbox run SCRIPT [ARGS]...`: the script runs as a script (argv, __file__, __main__, exit
status, uploads), locally; what is refused before a session starts."""

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from cogbox.cli.script import ScriptError, prepare_script
from cogbox.images.store import Image
from tests.kernel.test_cli_run import COGBOX_RUN, cogbox_run

HELPER = "def epoch_line(n):\n    return 'epoch %d' % n\n"
TRAIN = textwrap.dedent(
    """\
    from __future__ import print_function
    import argparse
    import sys

    import helper

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, required=True)
    options = parser.parse_args()
    for n in range(1, options.epochs + 1):
        print(helper.epoch_line(n))
    sys.exit(3)
    """
)


def write_training_job(folder: Path) -> Path:
    """train.py and its helper.py, as the issue's user brings them."""
    (folder / "helper.py").write_text(HELPER)
    (folder / "train.py").write_text(TRAIN)
    return folder


def test_training_script_with_its_helper_prints_the_epochs_and_exits_3(
    cntk_image: Image, tmp_path: Path
) -> None:
    job = write_training_job(tmp_path)
    result = cogbox_run(
        "--image", "cntk", "--upload", str(job / "helper.py"), str(job / "train.py"),
        "--epochs", "2",
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (3, "epoch 1\nepoch 2\n"), result.stderr


def test_script_sees_its_file_name_main_and_python(python_image: Image, tmp_path: Path) -> None:
    script = tmp_path / "whoami.py"
    script.write_text(
        "import os, sys\n"
        "print(os.path.abspath(__file__), __name__, sys.argv[0], sys.version_info[0])\n"
    )
    result = cogbox_run("--image", "python", str(script))
    assert result.stdout == "/home/work/whoami.py __main__ whoami.py 3\n", result.stderr


def test_cntk_script_runs_on_the_images_python_2(cntk_image: Image, tmp_path: Path) -> None:
    script = tmp_path / "version.py"
    script.write_text("import sys\nprint(sys.version_info[0])\n")
    result = cogbox_run("--image", "cntk", str(script))
    assert (result.returncode, result.stdout) == (0, "2\n"), result.stderr


def test_arguments_with_spaces_and_quotes_arrive_unchanged(
    python_image: Image, tmp_path: Path
) -> None:
    script = tmp_path / "argv.py"
    script.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    args = ["two words", "it's", 'say "hi"', "$HOME", "a;b", "--flag=x y"]
    result = cogbox_run("--image", "python", str(script), *args)
    assert result.stdout.strip() == json.dumps(args), result.stderr


def test_folder_upload_keeps_its_tree_for_a_subfolder_module(
    python_image: Image, tmp_path: Path
) -> None:
    package = tmp_path / "pkg" / "sub"
    package.mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 'from pkg/sub/mod.py'\n")
    script = tmp_path / "main.py"
    script.write_text("from pkg.sub.mod import VALUE\nprint(VALUE)\n")
    result = cogbox_run("--image", "python", "--upload", str(tmp_path / "pkg"), str(script))
    assert (result.returncode, result.stdout) == (0, "from pkg/sub/mod.py\n"), result.stderr


def test_script_killed_by_a_signal_exits_128_plus_its_number(
    python_image: Image, tmp_path: Path
) -> None:
    script = tmp_path / "killed.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    result = cogbox_run("--image", "python", str(script))
    assert result.returncode == 128 + 15, result.stderr


def test_script_output_is_streamed_as_written(python_image: Image, tmp_path: Path) -> None:
    script = tmp_path / "both.py"
    script.write_text("import sys\nprint('out')\nsys.stderr.write('err\\n')\n")
    result = cogbox_run("--image", "python", str(script))
    assert (result.returncode, result.stdout, "err\n" in result.stderr) == (0, "out\n", True)


def test_missing_upload_is_refused_before_a_session_starts(tmp_path: Path) -> None:
    # No image fixture: refused before anything is started or even looked up.
    script = tmp_path / "main.py"
    script.write_text("print(1)\n")
    result = cogbox_run("--upload", str(tmp_path / "absent.csv"), str(script))
    assert result.returncode == 2 and "absent.csv' does not exist" in result.stderr


def test_missing_script_is_refused_before_a_session_starts(tmp_path: Path) -> None:
    result = cogbox_run(str(tmp_path / "absent.py"))
    assert result.returncode == 2 and "absent.py' is not a file" in result.stderr


@pytest.mark.parametrize("dest", ["/etc/x", "../x", "a/../../x", "."])
def test_upload_destination_outside_home_work_is_refused(tmp_path: Path, dest: str) -> None:
    script = tmp_path / "main.py"
    script.write_text("")
    with pytest.raises(ScriptError, match="destination"):
        prepare_script(script, (), (f"{script}:{dest}",))


def test_script_command_quotes_each_argument(tmp_path: Path) -> None:
    script = tmp_path / "my job.py"
    script.write_text("")
    run = prepare_script(script, ("a b", "it's"), ())
    assert run.command == "exec \"$COGBOX_PYTHON\" 'my job.py' 'a b' 'it'\"'\"'s'"


def test_ctrl_c_interrupts_the_script_and_exits_130(python_image: Image, tmp_path: Path) -> None:
    script = tmp_path / "forever.py"
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(300)\n")
    with subprocess.Popen(
        [*COGBOX_RUN, "--image", "python", str(script)], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None and process.stdout.readline() == "started\n"
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert (process.wait(timeout=60), time.monotonic() - started < 30) == (130, True)
