"""Attack family "filesystem (symlinks the host follows)" and "service input", for storage
folders: a jail that mounts a folder read-write plants links (to host files, to host
folders), a FIFO and hard-to-parse names in it; the host's download, upload, listing, move,
rename, mkdir and remove must never read or write outside the folder, and paths with "..",
NUL or an absolute start are refused with a 4xx naming the field.

Judged from the host side, through a real `cogbox serve`: the answers' status and body, and
the victim files and folders on the host (content and listing), which must be unchanged.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cogbox.images.store import Image
from tests.service.support import Client, Service, running_service

FOLDER = "trap"


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("vfolder-attacks")
    with running_service(directory, "--pool", "python=0", "--pool", "cntk=0") as running:
        yield running


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host folder (and file) that the planted links point at."""
    folder = tmp_path_factory.mktemp("victim")
    (folder / "secret.txt").write_text("host secret\n")
    return folder


@pytest.fixture(scope="module")
def alice(service: Service, victim: Path) -> Client:
    """A keypair whose folder FOLDER holds links planted by its own jail."""
    keys = service.keypair()
    created = keys.request("POST", "/folders", json={"name": FOLDER, "quota": "8m"})
    assert created.status_code == 201, created.text
    plant = (
        "import os\n"
        "os.chdir('/home/work/trap')\n"
        "os.symlink('/etc/passwd', 'passwd')\n"
        "os.symlink('/etc', 'etc')\n"
        f"os.symlink({str(victim)!r}, 'victim')\n"
        f"os.symlink({str(victim / 'secret.txt')!r}, 'victim_file')\n"
        "os.mkfifo('fifo')\n"
        "open('plain.txt', 'w').write('plain')\n"
        "print('planted')"
    )
    session = keys.request(
        "POST",
        "/session",
        json={"image": "python", "name": "planter", "config": {"mounts": [FOLDER]}},
    )
    assert session.status_code == 201, session.text
    ran = keys.request(
        "POST", "/session/planter", json={"mode": "query", "code": plant, "runId": "p"}
    )
    keys.request("DELETE", "/session/planter")
    assert "planted" in str(ran.json()), ran.text
    return keys


def _call(keys: Client, method: str, action: str, body: dict[str, Any]) -> requests.Response:
    return keys.request(method, f"/folders/{FOLDER}/{action}", json=body)


def _download(keys: Client, path: str) -> requests.Response:
    asked = _call(keys, "POST", "request-download", {"path": path})
    if asked.status_code != 200:
        return asked
    ticket = asked.json()
    return requests.get(ticket["url"], params={"token": ticket["token"]}, timeout=30)


def _upload(keys: Client, path: str, data: bytes) -> requests.Response:
    asked = _call(keys, "POST", "request-upload", {"path": path, "size": len(data)})
    if asked.status_code != 200:
        return asked
    ticket = asked.json()
    return requests.patch(
        ticket["url"],
        params={"token": ticket["token"]},
        data=data,
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )


def _victim_state(victim: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(victim.iterdir())}


@pytest.mark.parametrize("path", ["passwd", "etc/passwd", "victim/secret.txt", "victim_file"])
def test_download_never_follows_a_planted_link(alice: Client, path: str) -> None:
    answer = _download(alice, path)
    assert (answer.status_code, "root:" in answer.text, "host secret" in answer.text) == (
        400,
        False,
        False,
    ), answer.text


def test_download_of_a_planted_fifo_is_refused_at_once(alice: Client) -> None:
    answer = _download(alice, "fifo")
    assert (answer.status_code, "not a regular file" in answer.text) == (400, True), answer.text


@pytest.mark.parametrize("path", ["etc", "victim"])
def test_listing_never_follows_a_planted_link(alice: Client, path: str) -> None:
    answer = _call(alice, "GET", "files", {"path": path})
    assert (answer.status_code, "secret.txt" in answer.text, "passwd" in answer.text) == (
        400,
        False,
        False,
    ), answer.text


def test_upload_through_a_planted_folder_link_writes_nothing_outside(
    alice: Client, victim: Path
) -> None:
    before = _victim_state(victim)
    answer = _upload(alice, "victim/dropped.txt", b"owned")
    assert (answer.status_code, _victim_state(victim)) == (400, before), answer.text


def test_upload_onto_a_planted_file_link_replaces_the_link_not_the_host_file(
    alice: Client, victim: Path
) -> None:
    answer = _upload(alice, "victim_file", b"overwrite")
    downloaded = _download(alice, "victim_file")
    assert answer.status_code == 204, answer.text
    assert ((victim / "secret.txt").read_text(), downloaded.content) == (
        "host secret\n",
        b"overwrite",
    )


def test_mkdir_through_a_planted_link_makes_nothing_outside(alice: Client, victim: Path) -> None:
    before = _victim_state(victim)
    answer = _call(alice, "POST", "mkdir", {"path": "victim/sub", "parents": True})
    assert (answer.status_code, _victim_state(victim)) == (400, before), answer.text


def test_move_into_a_planted_link_moves_nothing_outside(alice: Client, victim: Path) -> None:
    before = _victim_state(victim)
    into = _call(alice, "POST", "move-file", {"src": "plain.txt", "dst": "victim/plain.txt"})
    out_of = _call(alice, "POST", "move-file", {"src": "victim/secret.txt", "dst": "stolen"})
    assert (into.status_code, out_of.status_code, _victim_state(victim)) == (400, 400, before), (
        into.text + out_of.text
    )


def test_rename_and_remove_of_a_planted_link_act_on_the_link_itself(
    alice: Client, victim: Path
) -> None:
    before = _victim_state(victim)
    renamed = _call(alice, "POST", "rename-file", {"target_path": "etc", "new_name": "etc2"})
    removed = _call(alice, "DELETE", "delete-files", {"files": ["victim"], "recursive": True})
    inside = _call(alice, "DELETE", "delete-files", {"files": ["etc2/passwd"]})
    assert (renamed.status_code, removed.status_code, inside.status_code) == (200, 200, 400), (
        renamed.text + removed.text + inside.text
    )
    assert _victim_state(victim) == before
    assert Path("/etc/passwd").read_text().startswith("root:")


BAD_PATHS = ["../escape", "a/../../escape", "/etc/passwd", "nul\0byte"]


@pytest.mark.parametrize("path", BAD_PATHS)
@pytest.mark.parametrize(
    ("method", "action", "field", "extra"),
    [
        ("GET", "files", "path", {}),
        ("POST", "mkdir", "path", {}),
        ("POST", "request-upload", "path", {"size": 1}),
        ("POST", "request-download", "path", {}),
        ("POST", "move-file", "src", {"dst": "x"}),
        ("POST", "move-file", "dst", {"src": "plain.txt"}),
        ("POST", "rename-file", "target_path", {"new_name": "x"}),
        ("DELETE", "delete-files", "files", {}),
    ],
)
def test_paths_that_leave_the_folder_are_refused_with_400(
    alice: Client, method: str, action: str, field: str, extra: dict[str, Any], path: str
) -> None:
    value: Any = [path] if field == "files" else path
    answer = _call(alice, method, action, {field: value, **extra})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] in ("invalid-path", "bad-request"), answer.text


@pytest.mark.parametrize("name", ["..", ".", "a/b", "nul\0", "x" * 65, ".bashrc", ".ssh"])
def test_bad_folder_names_are_refused_with_400(alice: Client, name: str) -> None:
    answer = alice.request("POST", "/folders", json={"name": name, "quota": "8m"})
    assert answer.status_code == 400, answer.text


def test_a_token_is_bound_to_its_folder_and_dies_with_it(service: Service) -> None:
    keys = service.keypair()
    assert keys.request("POST", "/folders", json={"name": "brief", "quota": "8m"}).ok
    asked = keys.request("POST", "/folders/brief/request-upload", json={"path": "f", "size": 4})
    keys.request("DELETE", "/folders/brief")
    ticket = asked.json()
    late = requests.patch(
        ticket["url"],
        params={"token": ticket["token"]},
        data=b"late",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )
    guessed = requests.get(
        ticket["url"].replace("upload", "download"), params={"token": "guess"}, timeout=30
    )
    assert (late.status_code, guessed.status_code) == (404, 401), late.text + guessed.text


def test_an_upload_cannot_send_more_than_it_declared(alice: Client) -> None:
    asked = _call(alice, "POST", "request-upload", {"path": "declared", "size": 4})
    ticket = asked.json()
    answer = requests.patch(
        ticket["url"],
        params={"token": ticket["token"]},
        data=b"x" * (1 << 20),
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )
    listing = _call(alice, "GET", "files", {"path": "."}).text
    assert (answer.status_code, "declared" in listing) == (413, False), answer.text
