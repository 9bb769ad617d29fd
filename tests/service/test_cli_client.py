"""The CLI as a client of a real `cogbox serve`: `cogbox session create/ls/exec/rm/token`
and `run_remote` (what `cogbox run --endpoint` runs), signed by the service's own code."""

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cogbox.cli.run import run
from cogbox.cli.session import session
from cogbox.images.store import Image
from cogbox.kernel.events import Finished, Stdout
from cogbox.service.auth import jupyter_token
from cogbox.service.client import Endpoint, ServiceClientError, run_remote
from tests.kernel.test_cli_script import write_training_job
from tests.service.support import Client


def _cli(keys: Client, *args: str, **kwargs: Any) -> Result:
    env = {
        "COGBOX_ENDPOINT": keys.url,
        "COGBOX_ACCESS_KEY": keys.access_key,
        "COGBOX_SECRET_KEY": keys.secret_key,
    }
    return CliRunner().invoke(session, list(args), env=env, **kwargs)


def _statuses(keys: Client) -> dict[str, str]:
    return {s["name"]: s["status"] for s in keys.request("GET", "/v1/sessions").json()["sessions"]}


@pytest.fixture(scope="module")
def named(alice: Client) -> str:
    result = _cli(alice, "create", "python", "--name", "cli-kept")
    assert result.exit_code == 0, result.output
    return "cli-kept"


def test_session_create_prints_a_running_session(named: str, alice: Client) -> None:
    assert _statuses(alice)[named] == "running"


def test_session_ls_lists_the_session(named: str, alice: Client) -> None:
    result = _cli(alice, "ls")
    header, *rows = [line.split() for line in result.output.splitlines() if line.strip()]
    status = header.index("STATUS")
    assert [(row[0], row[status]) for row in rows if named in row] == [(named, "running")]


def test_session_exec_keeps_variables_between_runs(named: str, alice: Client) -> None:
    _cli(alice, "exec", named, "-c", "x = 6 * 7")
    result = _cli(alice, "exec", named, "-c", "print(x)")
    assert (result.exit_code, result.output) == (0, "42\n")


def test_session_exec_exits_1_when_the_code_raises(named: str, alice: Client) -> None:
    result = _cli(alice, "exec", named, "-c", "1 / 0")
    assert (result.exit_code, "ZeroDivisionError" in result.output) == (1, True)


def test_session_exec_answers_input_from_stdin(named: str, alice: Client) -> None:
    result = _cli(alice, "exec", named, "-c", "print('hi ' + input())", input="ada\n")
    assert result.output.splitlines()[-1] == "hi ada"


def test_session_rm_terminates_the_session(alice: Client) -> None:
    _cli(alice, "create", "python", "--name", "cli-removed")
    result = _cli(alice, "rm", "cli-removed")
    assert (result.exit_code, _statuses(alice)["cli-removed"]) == (0, "terminated")


def test_session_exec_on_an_unknown_session_names_it(alice: Client) -> None:
    result = _cli(alice, "exec", "no-such-session", "-c", "pass")
    assert isinstance(result.exception, ServiceClientError)
    assert "no-such-session" in str(result.exception)


def test_session_token_is_the_keypairs_jupyter_token(alice: Client) -> None:
    result = _cli(alice, "token")
    assert result.output.strip() == jupyter_token(alice.access_key, alice.secret_key)


def test_run_remote_streams_the_run_and_destroys_its_session(bob: Client) -> None:
    endpoint = Endpoint(bob.url, bob.access_key, bob.secret_key)
    events = list(run_remote(endpoint, "python", "print(6 * 7)"))
    statuses = set(_statuses(bob).values())
    assert (events[0], type(events[-1]), statuses) == (Stdout("42\n"), Finished, {"terminated"})


def test_endpoint_reads_backendai_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "BACKEND_ENDPOINT": "http://127.0.0.1:8090/",
        "BACKEND_ACCESS_KEY": "AKIAEXAMPLE",
        "BACKEND_SECRET_KEY": "secret",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("COGBOX_ENDPOINT", "COGBOX_ACCESS_KEY", "COGBOX_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert Endpoint.resolve() == Endpoint("http://127.0.0.1:8090", "AKIAEXAMPLE", "secret")


def test_endpoint_missing_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix in ("COGBOX", "BACKEND"):
        for suffix in ("ENDPOINT", "ACCESS_KEY", "SECRET_KEY"):
            monkeypatch.delenv(f"{prefix}_{suffix}", raising=False)
    with pytest.raises(ServiceClientError, match="COGBOX_ENDPOINT"):
        Endpoint.resolve()


def test_cogbox_run_with_endpoint_runs_on_the_service(bob: Client) -> None:
    env = {"COGBOX_ACCESS_KEY": bob.access_key, "COGBOX_SECRET_KEY": bob.secret_key}
    before = set(_statuses(bob))
    result = CliRunner().invoke(run, ["--endpoint", bob.url, "-c", "print(6 * 7)\n1 / 0"], env=env)
    assert (result.exit_code, result.stdout.splitlines()[0]) == (1, "42")
    assert "ZeroDivisionError" in result.stderr
    assert {n: s for n, s in _statuses(bob).items() if n not in before and s != "terminated"} == {}


def test_cogbox_run_script_with_upload_on_the_service_exits_with_its_status(
    bob: Client, cntk_image: Image, tmp_path: Path
) -> None:
    job = write_training_job(tmp_path)
    env = {"COGBOX_ACCESS_KEY": bob.access_key, "COGBOX_SECRET_KEY": bob.secret_key}
    args = ["--image", "cntk", "--upload", str(job / "helper.py"), str(job / "train.py")]
    result = CliRunner().invoke(
        run, [*args, "--epochs", "2"], env={"COGBOX_ENDPOINT": bob.url, **env}
    )
    assert (result.exit_code, result.stdout) == (3, "epoch 1\nepoch 2\n"), result.stderr


def test_cogbox_run_script_on_the_service_gets_argv_and_folder_uploads(
    bob: Client, tmp_path: Path
) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "mod.py").write_text("VALUE = 'deep'\n")
    script = tmp_path / "my main+1.py"  # a name that needs quoting in the upload's URL
    script.write_text(
        "import sys\nfrom pkg.sub.mod import VALUE\nprint(VALUE, __name__, sys.argv[1:])\n"
    )
    env = {"COGBOX_ACCESS_KEY": bob.access_key, "COGBOX_SECRET_KEY": bob.secret_key}
    result = CliRunner().invoke(
        run,
        ["--endpoint", bob.url, "--upload", str(tmp_path / "pkg"), str(script), "a b", "it's"],
        env=env,
    )
    assert (result.exit_code, result.stdout) == (0, "deep __main__ ['a b', \"it's\"]\n"), (
        result.output,
        result.exception,
    )


def test_cogbox_run_script_on_the_service_killed_by_a_signal_exits_128_plus_n(
    bob: Client, tmp_path: Path
) -> None:
    script = tmp_path / "killed.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    env = {"COGBOX_ACCESS_KEY": bob.access_key, "COGBOX_SECRET_KEY": bob.secret_key}
    result = CliRunner().invoke(run, ["--endpoint", bob.url, str(script)], env=env)
    assert result.exit_code == 128 + 9, result.output
