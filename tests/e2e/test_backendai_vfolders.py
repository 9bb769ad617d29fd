"""End to end: storage folders with the unmodified `backend.ai-client` 23.3.12 (`vfolder ...`,
`run -v NAME[=PATH]`) against `cogbox serve`: TUS upload, listing, mounts read-write and
read-only, download after the session ended, other keypairs refused, quotas, and the file
operations. The client exits 0 even when the server refused: tests judge by what it printed.
"""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cogbox.images.store import Image
from tests.e2e.test_backendai_client import backendai  # noqa: F401 - the client fixture
from tests.service.support import Client, Service, running_service

MIB = 1 << 20


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("vfolders")
    with running_service(directory, "--pool", "python=0", "--pool", "cntk=0") as running:
        yield running


@pytest.fixture(scope="module")
def alice(service: Service) -> Client:
    return service.keypair()


@pytest.fixture(scope="module")
def mallory(service: Service) -> Client:
    return service.keypair()


@pytest.fixture
def bai(backendai: Path, alice: Client, tmp_path: Path) -> "Bai":  # noqa: F811
    return Bai(backendai, alice, tmp_path)


class Bai:
    """`backend.ai` as one keypair, run in a folder of the test's own."""

    def __init__(self, command: Path, keys: Client, cwd: Path) -> None:
        self.command, self.keys, self.cwd = command, keys, cwd

    def as_(self, keys: Client) -> "Bai":
        return Bai(self.command, keys, self.cwd)

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "BACKEND_ENDPOINT": self.keys.url,
            "BACKEND_ACCESS_KEY": self.keys.access_key,
            "BACKEND_SECRET_KEY": self.keys.secret_key,
            "BACKEND_ENDPOINT_TYPE": "api",
        }
        return subprocess.run(
            [str(self.command), *args],
            env=env,
            cwd=self.cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def run(self, *mounts: str, code: str) -> subprocess.CompletedProcess[str]:
        volumes = [arg for mount in mounts for arg in ("-v", mount)]
        return self("run", "--rm", *volumes, "python", "-c", code)

    def files(self, folder: str, path: str = ".") -> list[str]:
        listed = self("vfolder", "ls", folder, path)
        rows = listed.stdout.splitlines()[2:]  # after the header and its rule
        return [row.split()[0] for row in rows if row.strip()]


def out(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_create_upload_by_tus_ls_and_list(bai: Bai) -> None:
    payload = os.urandom(3 * MIB + 5)
    (bai.cwd / "weights.bin").write_bytes(payload)
    created = bai("vfolder", "create", "models", "-q", "64m")
    # 1 MiB chunks: four TUS PATCH requests, each at the offset the last one answered.
    uploaded = bai("vfolder", "upload", "models", "weights.bin", "--chunk-size", "1m")
    listed = bai("vfolder", "ls", "models")
    folders = bai("vfolder", "list")
    assert 'Virtual folder "models" is created.' in created.stdout, out(created)
    assert "Done." in out(uploaded), out(uploaded)
    assert [row.split()[:2] for row in listed.stdout.splitlines() if "weights" in row] == [
        ["weights.bin", str(len(payload))]
    ], out(listed)
    assert "models" in folders.stdout, out(folders)


def test_recursive_upload_keeps_the_tree(bai: Bai) -> None:
    (bai.cwd / "tree" / "sub").mkdir(parents=True)
    (bai.cwd / "tree" / "top.txt").write_text("t")
    (bai.cwd / "tree" / "sub" / "deep.txt").write_text("d")
    bai("vfolder", "create", "recursive", "-q", "8m")
    uploaded = bai("vfolder", "upload", "-r", "recursive", "tree")
    assert "Done." in out(uploaded), out(uploaded)
    assert (bai.files("recursive", "tree"), bai.files("recursive", "tree/sub")) == (
        ["sub", "top.txt"],
        ["deep.txt"],
    )


def test_session_writes_the_mounted_folder_and_the_file_downloads_after_it_ended(
    bai: Bai,
) -> None:
    bai("vfolder", "create", "work1", "-q", "16m")
    (bai.cwd / "in.txt").write_text("from the host\n")
    bai("vfolder", "upload", "work1", "in.txt")
    ran = bai.run(
        "work1",
        code="d = '/home/work/work1/'\n"
        "open(d + 'out.txt', 'w').write(open(d + 'in.txt').read().upper())\n"
        "print('wrote')",
    )
    (bai.cwd / "in.txt").unlink()
    downloaded = bai("vfolder", "download", "work1", "out.txt")
    assert "wrote" in ran.stdout, out(ran)
    assert "Done." in out(downloaded), out(downloaded)
    assert (bai.cwd / "out.txt").read_text() == "FROM THE HOST\n"


def test_mount_path_follows_backendai_rules(bai: Bai) -> None:
    bai("vfolder", "create", "inputs", "-q", "8m")
    relative = bai.run(
        "inputs=data/in", code="import os; print(os.path.ismount('/home/work/data/in'))"
    )
    system = bai.run("inputs=/etc/x", code="print('ran')")
    outside = bai.run("inputs=/data/in", code="print('ran')")
    assert "True" in relative.stdout, out(relative)
    assert "ran" not in system.stdout and "system folder" in out(system), out(system)
    assert "ran" not in outside.stdout and "under /home/work only" in out(outside), out(outside)


def test_another_keypair_can_neither_list_mount_nor_read_a_folder(
    bai: Bai, mallory: Client
) -> None:
    bai("vfolder", "create", "secret", "-q", "8m")
    (bai.cwd / "key.txt").write_text("alice's\n")
    bai("vfolder", "upload", "secret", "key.txt")
    (bai.cwd / "key.txt").unlink()
    other = bai.as_(mallory)
    listed = other("vfolder", "list")
    ls = other("vfolder", "ls", "secret")
    downloaded = other("vfolder", "download", "secret", "key.txt")
    mounted = other.run("secret", code="print(open('/home/work/secret/key.txt').read())")
    assert "secret" not in listed.stdout, out(listed)
    assert "no folder named 'secret'" in out(ls), out(ls)
    assert "no folder named 'secret'" in out(downloaded), out(downloaded)
    assert not (bai.cwd / "key.txt").exists()
    assert "alice's" not in mounted.stdout and "to mount" in out(mounted), out(mounted)


def test_readonly_folder_is_read_but_refuses_writes(bai: Bai) -> None:
    bai("vfolder", "create", "dataset", "-q", "8m", "-p", "ro")
    (bai.cwd / "rows.csv").write_text("a,b\n")
    bai("vfolder", "upload", "dataset", "rows.csv")
    ran = bai.run(
        "dataset",
        code="print(open('/home/work/dataset/rows.csv').read().strip())\n"
        "try:\n"
        "    open('/home/work/dataset/new.csv', 'w')\n"
        "except OSError as e:\n"
        "    print('refused:', e.strerror)",
    )
    assert "a,b" in ran.stdout, out(ran)
    assert "refused: Read-only file system" in ran.stdout, out(ran)


def test_full_folder_refuses_an_upload_and_a_write_with_a_clear_error(bai: Bai) -> None:
    bai("vfolder", "create", "small", "-q", "8m")
    (bai.cwd / "big.bin").write_bytes(os.urandom(10 * MIB))
    uploaded = bai("vfolder", "upload", "small", "big.bin")
    ran = bai.run(
        "small",
        code="try:\n"
        "    with open('/home/work/small/fill', 'wb') as f:\n"
        "        for _ in range(12): f.write(b'x' * (1 << 20)); f.flush()\n"
        "except OSError as e:\n"
        "    print('refused:', e.strerror)",
    )
    assert "folder 'small' is full" in out(uploaded), out(uploaded)
    assert "refused: No space left on device" in ran.stdout, out(ran)


def test_rename_and_delete_a_folder(bai: Bai) -> None:
    bai("vfolder", "create", "old-name", "-q", "8m")
    renamed = bai("vfolder", "rename", "old-name", "new-name")
    old = bai("vfolder", "ls", "old-name")
    new = bai("vfolder", "ls", "new-name")
    deleted = bai("vfolder", "delete", "new-name")
    listed = bai("vfolder", "list")
    assert "Renamed." in out(renamed), out(renamed)
    assert "no folder named 'old-name'" in out(old), out(old)
    assert "Retrieved." in out(new), out(new)
    assert "Deleted." in out(deleted), out(deleted)
    assert "new-name" not in listed.stdout, out(listed)


def test_mkdir_mv_rm_inside_a_folder(bai: Bai) -> None:
    bai("vfolder", "create", "tree", "-q", "8m")
    (bai.cwd / "a.txt").write_text("a\n")
    bai("vfolder", "upload", "tree", "a.txt")
    made = bai("vfolder", "mkdir", "tree", "x/y", "-p")
    moved = bai("vfolder", "mv", "tree", "a.txt", "x/y")  # into the directory
    in_y = bai.files("tree", "x/y")
    removed = bai("vfolder", "rm", "tree", "x/y/a.txt", stdin="y\n")
    after_rm = bai.files("tree", "x/y")
    plain_rm_of_dir = bai("vfolder", "rm", "tree", "x", stdin="y\n")
    recursive = bai("vfolder", "rm", "-r", "tree", "x", stdin="y\n")
    assert ("Done." in out(made), "Moved." in out(moved)) == (True, True), out(made) + out(moved)
    assert in_y == ["a.txt"]
    assert ("Done." in out(removed), after_rm) == (True, []), out(removed)
    assert "recursive option" in out(plain_rm_of_dir), out(plain_rm_of_dir)
    assert ("Done." in out(recursive), bai.files("tree")) == (True, []), out(recursive)


def test_dot_named_folder_is_mounted_into_every_session(bai: Bai) -> None:
    bai("vfolder", "create", ".config-e2e", "-q", "8m")
    (bai.cwd / "settings.ini").write_text("[x]\n")
    bai("vfolder", "upload", ".config-e2e", "settings.ini")
    ran = bai.run(code="print(open('/home/work/.config-e2e/settings.ini').read().strip())")
    bai("vfolder", "delete", ".config-e2e")
    assert "[x]" in ran.stdout, out(ran)


def _create_session(keys: Client, name: str, mounts: list[str]) -> dict[str, Any]:
    response = keys.request(
        "POST",
        "/session",
        json={"image": "python", "name": name, "config": {"mounts": mounts}},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _query(keys: Client, name: str, code: str) -> str:
    response = keys.request(
        "POST", f"/session/{name}", json={"mode": "query", "code": code, "runId": "r1"}
    )
    assert response.status_code == 200, response.text
    console = response.json()["result"]["console"]
    return "".join(item[1] for item in console if item[0] == "stdout")


def test_two_sessions_mount_one_folder_at_once_and_delete_waits_for_them(
    bai: Bai, alice: Client
) -> None:
    bai("vfolder", "create", "shared", "-q", "8m")
    _create_session(alice, "writer", ["shared"])
    _create_session(alice, "reader", ["shared"])
    try:
        _query(alice, "writer", "open('/home/work/shared/note', 'w').write('hi')")
        seen = _query(alice, "reader", "print(open('/home/work/shared/note').read())")
        refused = bai("vfolder", "delete", "shared")
    finally:
        for name in ("writer", "reader"):
            alice.request("DELETE", f"/session/{name}")
    deleted = bai("vfolder", "delete", "shared")
    assert seen.strip() == "hi"
    assert "mounted by active session" in out(refused), out(refused)
    assert "Deleted." in out(deleted), out(deleted)
