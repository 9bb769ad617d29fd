"""`cogbox vfolder ...` as a client of a real `cogbox serve`: the folder's life, its files
through the token URLs, and refusals worded by the service."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cogbox.cli.session import session
from cogbox.cli.vfolder import vfolder
from cogbox.images.store import Image
from tests.service.support import Client, Service, running_service


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("cli-vfolder")
    with running_service(directory, "--pool", "python=0", "--pool", "cntk=0") as running:
        yield running


def _cli(keys: Client, *args: str, **kwargs: Any) -> Result:
    env = {
        "COGBOX_ENDPOINT": keys.url,
        "COGBOX_ACCESS_KEY": keys.access_key,
        "COGBOX_SECRET_KEY": keys.secret_key,
    }
    return CliRunner().invoke(vfolder, list(args), env=env, **kwargs)


def test_vfolder_round_trip_through_the_cli(alice: Client, tmp_path: Path) -> None:
    payload = os.urandom(3 << 20)
    (tmp_path / "blob.bin").write_bytes(payload)
    (tmp_path / "back").mkdir()
    steps = [
        _cli(alice, "create", "cli-data", "--quota", "16m"),
        _cli(alice, "mkdir", "cli-data", "in/deep", "-p"),
        _cli(alice, "upload", "cli-data", str(tmp_path / "blob.bin"), "--dest", "in"),
        _cli(alice, "mv", "cli-data", "in/blob.bin", "in/deep"),
        _cli(alice, "download", "cli-data", "in/deep/blob.bin", "-o", str(tmp_path / "back")),
    ]
    listed = _cli(alice, "ls", "cli-data", "in/deep")
    folders = json.loads(_cli(alice, "list", "--json").output)
    assert [s.exit_code for s in steps] == [0] * len(steps), [s.output for s in steps]
    assert (tmp_path / "back" / "blob.bin").read_bytes() == payload
    assert listed.output.split()[-1] == "blob.bin", listed.output
    assert [(f["name"], f["max_size"]) for f in folders] == [("cli-data", 16 << 20)]


def test_vfolder_rm_rename_delete(alice: Client, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    steps = [
        _cli(alice, "create", "cli-tmp", "--quota", "8m"),
        _cli(alice, "upload", "cli-tmp", str(tmp_path / "f.txt")),
        _cli(alice, "rm", "cli-tmp", "f.txt"),
        _cli(alice, "rename", "cli-tmp", "cli-gone"),
        _cli(alice, "delete", "cli-gone"),
    ]
    folders = json.loads(_cli(alice, "list", "--json").output)
    assert [s.exit_code for s in steps] == [0] * len(steps), [s.output for s in steps]
    assert "cli-gone" not in [f["name"] for f in folders]


def test_vfolder_upload_past_the_quota_is_refused_by_the_service(
    alice: Client, tmp_path: Path
) -> None:
    (tmp_path / "big.bin").write_bytes(b"\1" * (9 << 20))
    _cli(alice, "create", "cli-small", "--quota", "8m")
    result = _cli(alice, "upload", "cli-small", str(tmp_path / "big.bin"))
    assert result.exit_code != 0
    assert "folder 'cli-small' is full" in str(result.exception), result.output


def test_session_create_mounts_a_folder_from_the_cli(alice: Client, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("mounted")
    _cli(alice, "create", "cli-mnt", "--quota", "8m")
    _cli(alice, "upload", "cli-mnt", str(tmp_path / "in.txt"))
    env = {
        "COGBOX_ENDPOINT": alice.url,
        "COGBOX_ACCESS_KEY": alice.access_key,
        "COGBOX_SECRET_KEY": alice.secret_key,
    }
    runner = CliRunner()
    made = runner.invoke(
        session, ["create", "python", "--name", "mnt-cli", "-v", "cli-mnt=m"], env=env
    )
    ran = runner.invoke(
        session, ["exec", "mnt-cli", "-c", "print(open('/home/work/m/in.txt').read())"], env=env
    )
    runner.invoke(session, ["rm", "mnt-cli"], env=env)
    assert made.exit_code == 0, made.output
    assert "mounted" in ran.output, ran.output
