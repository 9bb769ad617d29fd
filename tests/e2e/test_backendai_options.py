"""End to end with the unmodified `backend.ai-client` 23.3.x: create options (`-e`,
`--bootstrap-script`, `-r cpu=`), what cogbox refuses by name (`cuda.*`, image tags,
reserved variables, GraphQL it does not serve), `session info`/`rename`/`events`, uploads
into subfolders and downloads that keep their mtimes. The client exits 0 even when the
server refused: tests judge by what it printed."""

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.oci import CPU_PERIOD_US
from tests.e2e.test_backendai_client import backendai, run_client
from tests.service.support import Client, Service, running_service

__all__ = ["backendai"]  # the fixture, shared with the client's other end-to-end tests


@pytest.fixture(scope="module")
def opt_service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("bai-options"), "--pool", "python=0") as service:
        yield service


@pytest.fixture(scope="module")
def keys(opt_service: Service) -> Client:
    return opt_service.keypair()


def _said(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


# ------------------------------------------------------------------ environment


def test_run_env_reaches_the_code(backendai: Path, keys: Client) -> None:
    code = "import os; print('FOO=' + os.environ['FOO'])"
    result = run_client(backendai, keys, "run", "--rm", "-e", "FOO=bar", "python", "-c", code)
    assert "FOO=bar" in result.stdout, _said(result)


def test_session_create_env_reaches_cells_and_batch_commands(backendai: Path, keys: Client) -> None:
    made = run_client(
        backendai, keys, "session", "create", "--name", "env-e2e", "-e", "FOO=bar", "python"
    )
    cell = run_client(
        backendai, keys, "run", "--name", "env-e2e", "python", "-c",
        "import os; print('cell ' + os.environ['FOO'])",
    )  # fmt: skip
    batch = keys.request(
        "POST", "/v1/sessions/env-e2e/batch", json={"exec": "echo batch $FOO"}, timeout=120
    )
    run_client(backendai, keys, "session", "destroy", "env-e2e")
    assert "cell bar" in cell.stdout, _said(made) + _said(cell)
    printed = "".join(e.get("text", "") for e in batch.json()["events"])
    assert "batch bar" in printed, batch.text


@pytest.mark.parametrize("name", ["HOME", "JPY_PARENT_PID", "COGBOX_DATA_DIR", "LD_PRELOAD"])
def test_a_variable_the_jail_keeps_is_refused_by_name(
    backendai: Path, keys: Client, name: str
) -> None:
    result = run_client(backendai, keys, "run", "--rm", "-e", f"{name}=x", "python", "-c", "1")
    assert f"config.environ.{name}" in _said(result), _said(result)


def test_ordinary_variables_like_path_pass(backendai: Path, keys: Client) -> None:
    code = "import os; print(os.environ['PATH'].split(':')[0])"
    result = run_client(
        backendai, keys, "run", "--rm", "-e", "PATH=/opt/mine:/usr/bin:/bin", "python", "-c", code
    )
    assert "/opt/mine" in result.stdout, _said(result)


# ------------------------------------------------------------------ bootstrap, resources


def test_bootstrap_script_runs_before_the_first_cell(
    backendai: Path, keys: Client, tmp_path: Path
) -> None:
    script = tmp_path / "boot.sh"
    script.write_text("#!/bin/sh\necho booted-with-$FOO > /home/work/boot.txt\n")
    result = run_client(
        backendai, keys, "run", "--rm", "-e", "FOO=env", "--bootstrap-script", str(script),
        "python", "-c", "print(open('boot.txt').read().strip())",
    )  # fmt: skip
    assert "booted-with-env" in result.stdout, _said(result)


def test_a_failing_bootstrap_script_fails_the_create_naming_its_status(
    backendai: Path, keys: Client, tmp_path: Path
) -> None:
    script = tmp_path / "boot.sh"
    script.write_text("echo about to fail\nexit 7\n")
    result = run_client(
        backendai, keys, "run", "--rm", "--bootstrap-script", str(script), "python", "-c", "1"
    )
    assert "exit status 7" in _said(result) and "about to fail" in _said(result), _said(result)


def _jail_cgroup_quota(marker: str) -> int | None:
    """The cpu quota (us per CPU_PERIOD_US) of the jail whose processes carry `marker`."""
    for quota_file in [
        *Path("/sys/fs/cgroup/cpu/cogbox").glob("*/jail/cpu.cfs_quota_us"),
        *Path("/sys/fs/cgroup/cogbox").glob("*/jail/cpu.max"),
    ]:
        procs = (quota_file.parent / "cgroup.procs").read_text().split()
        for pid in procs:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in environ:
                return int(quota_file.read_text().split()[0])
    return None


def test_cpu_resource_sets_the_jails_cpu_quota(backendai: Path, keys: Client) -> None:
    marker = f"MARK={uuid.uuid4().hex}"
    made = run_client(
        backendai, keys, "session", "create", "--name", "cpu-e2e", "-e", marker,
        "-r", "cpu=0.5", "python",
    )  # fmt: skip
    try:
        quota = _jail_cgroup_quota(marker)
    finally:
        run_client(backendai, keys, "session", "destroy", "cpu-e2e")
    assert quota == CPU_PERIOD_US // 2, _said(made)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-r", "cuda.shares=1"], "config.resources.cuda.shares"),
        (["-r", "cuda.device=1"], "config.resources.cuda.device"),
        (["-r", "cpu=many"], "config.resources.cpu"),
    ],
)
def test_resources_cogbox_cannot_give_are_refused_by_name(
    backendai: Path, keys: Client, args: list[str], named: str
) -> None:
    result = run_client(backendai, keys, "run", "--rm", *args, "python", "-c", "print(1)")
    assert named in _said(result) and "\n1\n" not in result.stdout, _said(result)


def test_an_image_tag_cogbox_cannot_honour_is_refused(backendai: Path, keys: Client) -> None:
    result = run_client(backendai, keys, "run", "--rm", "python:3.6-ubuntu", "-c", "print(1)")
    assert "'3.6-ubuntu'" in _said(result) and "not supported" in _said(result), _said(result)


def test_the_latest_tag_and_a_registry_prefix_are_honoured(backendai: Path, keys: Client) -> None:
    result = run_client(backendai, keys, "run", "--rm", "lablup/python:latest", "-c", "print(6*7)")
    assert "42" in result.stdout, _said(result)


# ------------------------------------------------------------------ GraphQL


def test_a_graphql_query_cogbox_does_not_serve_is_a_400_naming_it(keys: Client) -> None:
    response = keys.request("POST", "/admin/gql", json={"query": "{ agent_list { items { id } } }"})
    assert (response.status_code, "agent_list" in response.json()["msg"]) == (400, True)


def test_a_graphql_field_cogbox_does_not_serve_is_a_400_naming_it(keys: Client) -> None:
    query = "{ compute_session_list { items { name kernel_gpu_magic } total_count } }"
    response = keys.request("POST", "/admin/gql", json={"query": query})
    assert (response.status_code, "kernel_gpu_magic" in response.json()["msg"]) == (400, True)


# ------------------------------------------------------------------ info, rename, events


def _session_id(keys: Client, name: str) -> str:
    return str(keys.request("GET", f"/v1/sessions/{name}").json()["id"])


def test_session_info_rename_and_events(backendai: Path, keys: Client) -> None:
    run_client(backendai, keys, "session", "create", "--name", "info-e2e", "python")
    session_id = _session_id(keys, "info-e2e")
    info = run_client(backendai, keys, "session", "info", session_id)
    renamed = run_client(backendai, keys, "session", "rename", "info-e2e", "renamed-e2e")
    ps = run_client(backendai, keys, "ps")
    events = subprocess.Popen(
        [str(backendai), "session", "events", "renamed-e2e"],
        env={
            **os.environ,
            "BACKEND_ENDPOINT": keys.url,
            "BACKEND_ACCESS_KEY": keys.access_key,
            "BACKEND_SECRET_KEY": keys.secret_key,
            "BACKEND_ENDPOINT_TYPE": "api",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    run_client(backendai, keys, "session", "destroy", "renamed-e2e")
    out, err = events.communicate(timeout=60)
    assert "info-e2e" in info.stdout and "RUNNING" in info.stdout, _said(info)
    assert "renamed-e2e" in ps.stdout, _said(renamed) + _said(ps)
    assert "session_started" in out and "session_terminated" in out, out + err


# ------------------------------------------------------------------ files


def test_upload_into_a_subfolder_lands_there(backendai: Path, keys: Client, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("in sub\n")
    run_client(backendai, keys, "session", "create", "--name", "sub-e2e", "python")
    upload = run_client(backendai, keys, "session", "upload", "sub-e2e", "sub/x.txt", cwd=tmp_path)
    read = run_client(
        backendai, keys, "run", "--name", "sub-e2e", "python", "-c",
        "import os; print(sorted(os.listdir('sub')), open('sub/x.txt').read().strip())",
    )  # fmt: skip
    run_client(backendai, keys, "session", "destroy", "sub-e2e")
    assert "['x.txt'] in sub" in read.stdout, _said(upload) + _said(read)


def test_a_downloaded_file_keeps_its_modification_time(
    backendai: Path, keys: Client, tmp_path: Path
) -> None:
    run_client(
        backendai, keys, "run", "--name", "mtime-e2e", "python", "-c",
        "import os; open('old.txt', 'w').write('x'); os.utime('old.txt', (1e9, 1e9))",
    )  # fmt: skip
    download = run_client(
        backendai, keys, "session", "download", "mtime-e2e", "old.txt", "--dest", str(tmp_path)
    )
    run_client(backendai, keys, "session", "destroy", "mtime-e2e")
    assert (tmp_path / "old.txt").stat().st_mtime == 1e9, _said(download)


def test_run_files_in_subfolders_land_there_for_the_batch_command(
    backendai: Path, keys: Client, tmp_path: Path
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("GREETING = 'from pkg/mod.py'\n")
    (tmp_path / "main.py").write_text("from pkg.mod import GREETING\nprint(GREETING)\n")
    result = run_client(
        backendai, keys, "run", "--rm", "--exec", "python main.py", "python",
        "main.py", "pkg/mod.py", cwd=tmp_path,
    )  # fmt: skip
    assert "from pkg/mod.py" in result.stdout, _said(result)


def test_a_route_cogbox_does_not_serve_is_a_problem_naming_it(
    backendai: Path, keys: Client
) -> None:
    run_client(backendai, keys, "session", "create", "--name", "route-e2e", "python")
    result = run_client(backendai, keys, "session", "status-history", "route-e2e")
    direct = keys.request("GET", "/session/route-e2e/status-history")
    run_client(backendai, keys, "session", "destroy", "route-e2e")
    assert "/session/route-e2e/status-history" in _said(result), _said(result)
    assert (direct.status_code, direct.json()["error"]) == (404, "unsupported-route")
