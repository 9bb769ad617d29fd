"""`cogbox session upload/download/files/interrupt/restart` against a real `cogbox serve`,
with `--endpoint` (and the keys) given after the subcommand, as on every command."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cogbox.cli.session import session
from tests.service.support import Client, Service


def _cli(keys: Client, *args: str, **kwargs: Any) -> Result:
    """The command with the endpoint on the subcommand itself (no COGBOX_* variables)."""
    command, *rest = args
    flags = ["--endpoint", keys.url, "--access-key", keys.access_key]
    flags += ["--secret-key", keys.secret_key]
    return CliRunner().invoke(session, [command, *flags, *rest], env={}, **kwargs)


@pytest.fixture(scope="module")
def named(alice: Client) -> str:
    result = _cli(alice, "create", "python", "--name", "cli-files")
    assert result.exit_code == 0, result.output
    return "cli-files"


def test_the_endpoint_is_accepted_on_the_group_too(named: str, alice: Client) -> None:
    flags = ["--endpoint", alice.url, "--access-key", alice.access_key]
    flags += ["--secret-key", alice.secret_key]
    result = CliRunner().invoke(session, [*flags, "files", named], env={})
    assert result.exit_code == 0, result.output


def test_upload_keeps_relative_folders_and_folder_trees(
    named: str, alice: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("x\n")
    (tmp_path / "pkg" / "inner").mkdir(parents=True)
    (tmp_path / "pkg" / "inner" / "mod.py").write_text("VALUE = 7\n")
    monkeypatch.chdir(tmp_path)
    result = _cli(alice, "upload", named, "sub/x.txt", "pkg")
    listing = _cli(alice, "files", named, "pkg/inner")
    ran = alice.execute(
        named, "from pkg.inner.mod import VALUE; print(open('sub/x.txt').read() * VALUE)"
    )
    assert result.exit_code == 0, result.output
    assert "mod.py" in listing.output, listing.output
    printed = "".join(e["text"] for e in ran["events"] if e["kind"] == "stdout")
    assert printed.count("x") == 7, ran


def test_upload_to_a_folder(named: str, alice: Client, tmp_path: Path) -> None:
    (tmp_path / "cfg.yml").write_text("a: 1\n")
    result = _cli(alice, "upload", named, str(tmp_path / "cfg.yml"), "--to", "conf")
    listing = _cli(alice, "files", named, "conf", "--json")
    assert result.exit_code == 0, result.output
    assert '"cfg.yml"' in listing.output, listing.output


def test_download_writes_the_file_with_its_mtime(named: str, alice: Client, tmp_path: Path) -> None:
    alice.execute(
        named, "import os; open('out.bin', 'wb').write(bytes(range(256)) * 9000); "
        "os.utime('out.bin', (1.5e9, 1.5e9))",
    )  # fmt: skip
    result = _cli(alice, "download", named, "out.bin", "--dest", str(tmp_path))
    target = tmp_path / "out.bin"
    assert result.exit_code == 0, result.output
    assert (target.read_bytes(), target.stat().st_mtime) == (bytes(range(256)) * 9000, 1.5e9)


def test_download_of_a_missing_file_fails_naming_it(
    named: str, alice: Client, tmp_path: Path
) -> None:
    result = _cli(alice, "download", named, "nope.txt", "--dest", str(tmp_path))
    assert result.exit_code != 0 and "nope.txt" in str(result.exception or result.output)
    assert list(tmp_path.iterdir()) == []


def test_restart_loses_variables_keeps_files(named: str, alice: Client) -> None:
    alice.execute(named, "kept = 1; open('stays.txt', 'w').write('s')")
    result = _cli(alice, "restart", named)
    ran = alice.execute(named, "import os; print('kept' in dir(), os.path.exists('stays.txt'))")
    printed = "".join(e["text"] for e in ran["events"] if e["kind"] == "stdout")
    assert (result.exit_code, printed) == (0, "False True\n"), result.output


def test_interrupt_stops_a_running_cell(named: str, alice: Client) -> None:
    env = {
        **os.environ,
        "COGBOX_ENDPOINT": alice.url,
        "COGBOX_ACCESS_KEY": alice.access_key,
        "COGBOX_SECRET_KEY": alice.secret_key,
    }
    running = subprocess.Popen(
        [sys.executable, "-m", "cogbox.cli", "session", "exec", named, "-c",
         "import time\nprint('started', flush=True)\ntime.sleep(60)"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert running.stdout is not None
    assert running.stdout.readline() == "started\n"
    started = time.monotonic()
    result = _cli(alice, "interrupt", named)
    out, _ = running.communicate(timeout=30)
    assert result.exit_code == 0, result.output
    assert (running.returncode, time.monotonic() - started < 20) == (1, True), out


def test_shell_with_an_endpoint_runs_cells_in_a_service_session(alice: Client) -> None:
    argv = [
        sys.executable, "-m", "cogbox.cli", "shell", "--endpoint", alice.url,
        "--access-key", alice.access_key, "--secret-key", alice.secret_key,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGBOX_", "BACKEND_"))}
    before = {s["id"] for s in alice.request("GET", "/v1/sessions").json()["sessions"]}
    shell = subprocess.run(
        argv,
        input="x = 20\nfor i in range(2):\n    x += 1\n\nprint(x)\n",
        env={**env, "COGBOX_SHELL_HISTORY": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = alice.request("GET", "/v1/sessions").json()["sessions"]
    made = [s for s in after if s["id"] not in before]
    assert (shell.returncode, shell.stdout) == (0, "22\n"), shell.stderr
    assert [s["status"] for s in made] == ["terminated"], made  # removed when the shell ended


def test_session_create_with_cpus_and_a_bootstrap_script(alice: Client, tmp_path: Path) -> None:
    from tests.e2e.test_backendai_options import _jail_cgroup_quota

    script = tmp_path / "boot.sh"
    script.write_text("echo ready > booted.txt\n")
    marker = f"MARK={os.getpid()}-{time.time_ns()}"
    made = _cli(
        alice, "create", "python", "--name", "cli-cpus", "--cpus", "0.25",
        "--bootstrap-script", str(script), "--env", marker,
    )  # fmt: skip
    try:
        quota = _jail_cgroup_quota(marker)
        ran = alice.execute("cli-cpus", "print(open('booted.txt').read().strip())")
    finally:
        _cli(alice, "rm", "cli-cpus")
    assert made.exit_code == 0, made.output
    assert quota == 25_000
    assert "".join(e["text"] for e in ran["events"] if e["kind"] == "stdout") == "ready\n"


def test_session_create_refuses_more_cpus_than_the_host_has(alice: Client) -> None:
    result = _cli(alice, "create", "python", "--cpus", "4096")
    assert result.exit_code != 0 and "cpus" in str(result.exception), result.output


def test_shell_with_an_endpoint_survives_an_interrupted_cell(
    service: Service, alice: Client
) -> None:
    argv = [
        sys.executable, "-m", "cogbox.cli", "shell", "--endpoint", alice.url,
        "--access-key", alice.access_key, "--secret-key", alice.secret_key,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGBOX_", "BACKEND_"))}
    shell = subprocess.Popen(
        argv, env={**env, "COGBOX_SHELL_HISTORY": ""}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert shell.stdin is not None and shell.stderr is not None
    while "ready" not in shell.stderr.readline():
        assert shell.poll() is None, "the shell ended before its session was ready"
    # One cell that says when it loops: the interrupt must reach the loop, not a cell
    # before it (an idle kernel ignores SIGINT; under load 0.5 s after "busy" was not enough).
    loop = "import time\nprint('looping', flush=True)\nwhile True: time.sleep(0.05)"
    shell.stdin.write(f"x = 21\nexec({loop!r})\n")
    shell.stdin.flush()
    deadline = time.monotonic() + 30
    while True:
        sessions = alice.request("GET", "/v1/sessions").json()["sessions"]
        logs = [alice.request("GET", f"/v1/sessions/{s['id']}/logs").text for s in sessions]
        if any("looping" in log for log in logs):
            break
        assert time.monotonic() < deadline, "the looping cell never started"
        time.sleep(0.05)
    shell.send_signal(signal.SIGINT)
    out, err = shell.communicate("print(x * 2)\n", timeout=60)
    said = err + service.log()[-1500:]
    assert (shell.returncode, out.split()[-1:], "interrupted" in err) == (0, ["42"], True), said
