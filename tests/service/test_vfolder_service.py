"""Storage folders through a real `cogbox serve`: the service's quotas (per folder by default,
per keypair for all its folders), and folders that outlive a restart of the service."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cogbox.images.store import Image
from tests.service.support import Client, Service, running_service


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("vfolder-service")
    args = ("--pool", "python=0", "--pool", "cntk=0")
    quotas = ("--vfolder-quota", "8m", "--vfolder-keypair-quota", "20m")
    with running_service(directory, *args, *quotas) as running:
        yield running


def _create(keys: Client, name: str, quota: str | None = None) -> requests.Response:
    return keys.request("POST", "/folders", json={"name": name, "quota": quota})


def test_a_folder_made_without_a_quota_gets_the_service_default(alice: Client) -> None:
    made = _create(alice, "default-quota")
    assert (made.status_code, made.json()["max_size"]) == (201, 8 << 20), made.text


def test_the_keypair_quota_refuses_a_folder_past_it_naming_the_figures(
    alice: Client, bob: Client
) -> None:
    first = _create(alice, "big", "12m")
    refused = _create(alice, "bigger", "4m")
    others = _create(bob, "bobs", "16m")
    assert first.status_code == 201, first.text
    assert (refused.status_code, refused.json()["error"]) == (429, "vfolder-keypair-quota")
    assert "20.0 MiB together" in refused.json()["msg"], refused.text
    assert others.status_code == 201, others.text


def test_folders_and_their_files_outlive_a_restart_of_the_service(
    service: Service, bob: Client
) -> None:
    assert _create(bob, "kept", "4m").status_code == 201
    asked = bob.request(
        "POST", "/folders/kept/request-upload", json={"path": "notes.txt", "size": 5}
    ).json()
    sent = requests.patch(
        asked["url"],
        params={"token": asked["token"]},
        data=b"notes",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )
    service.stop()
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    mounted = [line for line in mounts if str(service.directory) in line]
    service.start("--pool", "python=0", "--pool", "cntk=0")
    listed = bob.request("GET", "/folders/kept/files", json={"path": "."})
    assert sent.status_code == 204, sent.text
    assert mounted == [], "the stopped service left its folders mounted"
    assert '"notes.txt"' in listed.json()["files"], listed.text
    folder_id = bob.request("GET", "/folders/kept").json()["id"]
    assert os.path.ismount(service.directory / "vfolders" / folder_id / "mnt")


VFOLDER_LIST = (
    "query($limit:Int!, $offset:Int!, $filter: String) { vfolder_list(limit:$limit, "
    "offset:$offset, filter:$filter) { items { name permission } total_count } }"
)


def test_graphql_vfolder_list_shows_only_the_keypairs_own_folders(
    alice: Client, bob: Client
) -> None:
    variables = {"limit": 20, "offset": 0, "filter": None}
    mine = alice.request("POST", "/admin/gql", json={"query": VFOLDER_LIST, "variables": variables})
    names = [item["name"] for item in mine.json()["data"]["vfolder_list"]["items"]]
    assert "bobs" not in names and "big" in names, mine.text


def test_graphql_vfolder_list_refuses_a_filter_by_name(alice: Client) -> None:
    variables = {"limit": 20, "offset": 0, "filter": 'name == "x"'}
    answer = alice.request(
        "POST", "/admin/gql", json={"query": VFOLDER_LIST, "variables": variables}
    )
    assert (answer.status_code, "'variables.filter'" in answer.text) == (400, True), answer.text


def _patch(url: str, token: str, offset: int, data: bytes) -> requests.Response:
    return requests.patch(
        url,
        params={"token": token},
        data=data,
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )


def test_tus_upload_resumes_at_the_offset_head_reports(bob: Client) -> None:
    asked = bob.request(
        "POST", "/folders/bobs/request-upload", json={"path": "parts.bin", "size": 8}
    ).json()
    url, token = asked["url"], asked["token"]
    first = _patch(url, token, 0, b"1234")
    head = requests.head(url, params={"token": token}, headers={"Tus-Resumable": "1.0.0"})
    wrong = _patch(url, token, 0, b"5678")
    rest = _patch(url, token, 4, b"5678")
    listed = bob.request("GET", "/folders/bobs/files", json={"path": "."}).json()["files"]
    assert (first.status_code, first.headers["Upload-Offset"]) == (204, "4"), first.text
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == ("4", "8")
    assert (wrong.status_code, rest.status_code) == (409, 204), wrong.text + rest.text
    assert '"filename": "parts.bin", "size": 8' in listed, listed


def test_delete_by_id_deletes_only_the_keypairs_own_folder(alice: Client, bob: Client) -> None:
    bobs_id = bob.request("GET", "/folders/bobs").json()["id"]
    by_alice = alice.request("DELETE", "/folders", json={"id": bobs_id})
    still = bob.request("GET", "/folders/bobs")
    own = next(f for f in bob.request("GET", "/folders").json() if f["name"] != "bobs")
    by_bob = bob.request("DELETE", "/folders", json={"id": own["id"]})
    gone = bob.request("GET", f"/folders/{own['name']}")
    assert (by_alice.status_code, still.status_code) == (404, 200), by_alice.text
    assert (by_bob.status_code, gone.status_code) == (204, 404), by_bob.text
