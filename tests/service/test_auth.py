"""Auth: only correctly signed, fresh, unreplayed requests of a keypair reach its sessions.

Attack family: bugs in the service's own API (forged, stale and replayed requests; one
tenant reaching another's session). Every refusal is JSON, and nothing runs.
"""

import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from cogbox.service.auth import signature, signed_headers
from tests.service.support import KEYPAIR, Client, Service

WRITE_PROOF = "open('/home/work/proof.txt', 'w').write('ran')"


def _signed(client: Client, method: str, path: str, **overrides: Any) -> dict[str, str]:
    headers = signed_headers(
        access_key=client.access_key,
        secret_key=client.secret_key,
        method=method,
        path_with_query=path,
        host=client.url.removeprefix("http://"),
        now=overrides.pop("now", None),
    )
    headers.update(overrides)
    return headers


def _create_raw(client: Client, headers: dict[str, str]) -> requests.Response:
    return requests.post(
        client.url + "/v1/sessions", headers=headers, data=b'{"image": "python"}', timeout=30
    )


def _session_count(client: Client) -> int:
    return len(client.request("GET", "/v1/sessions").json()["sessions"])


def test_signature_matches_backendai_client_algorithm() -> None:
    # Vector computed with ai.backend.client.auth.generate_signature (23.3.12).
    date = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    sig = signature(
        secret_key="secret",
        method="GET",
        path_with_query="/session?x=1",
        raw_date=date.isoformat(),
        date=date,
        host="127.0.0.1:8090",
        content_type="application/json",
        version="v7.20230615",
    )
    assert sig == "711e01050776963a01f8a681d6c6456e00a29bf53d539063104dc6f9dec5474b"


def test_unsigned_request_is_refused_with_json_401(service: Service, alice: Client) -> None:
    response = requests.post(service.url + "/v1/sessions", json={"image": "python"}, timeout=30)
    assert (response.status_code, response.json()["error"]) == (401, "auth-failed")


def test_bad_signature_is_refused_and_creates_nothing(alice: Client) -> None:
    before = _session_count(alice)
    headers = _signed(alice, "POST", "/v1/sessions")
    headers["Authorization"] = headers["Authorization"][:-4] + "0000"
    response = _create_raw(alice, headers)
    assert (response.status_code, response.json()["error"], _session_count(alice)) == (
        401,
        "auth-failed",
        before,
    )


def test_unknown_access_key_is_refused(alice: Client) -> None:
    stranger = Client(alice.url, "AKIANOSUCHKEY0000000", alice.secret_key)
    response = _create_raw(stranger, _signed(stranger, "POST", "/v1/sessions"))
    assert response.status_code == 401 and "unknown" in response.json()["msg"]


def test_wrong_secret_key_is_refused(alice: Client) -> None:
    impostor = Client(alice.url, alice.access_key, "x" * 40)
    response = _create_raw(impostor, _signed(impostor, "POST", "/v1/sessions"))
    assert (response.status_code, response.json()["error"]) == (401, "auth-failed")


def test_stale_date_is_refused(alice: Client) -> None:
    stale = datetime.now(UTC) - timedelta(minutes=16)
    response = _create_raw(alice, _signed(alice, "POST", "/v1/sessions", now=stale))
    assert response.status_code == 401 and "server's clock" in response.json()["msg"]


def test_replayed_request_is_refused(alice: Client) -> None:
    headers = _signed(alice, "GET", "/v1/sessions")
    first = requests.get(alice.url + "/v1/sessions", headers=headers, timeout=30)
    again = requests.get(alice.url + "/v1/sessions", headers=headers, timeout=30)
    assert (first.status_code, again.status_code, again.json()["error"]) == (
        200,
        401,
        "replayed-request",
    )


def test_signature_for_another_path_is_refused(alice: Client) -> None:
    headers = _signed(alice, "GET", "/v1/sessions")
    response = requests.get(alice.url + "/v1/sessions?x=1", headers=headers, timeout=30)
    assert response.status_code == 401


def test_another_keypairs_session_is_not_found_and_nothing_runs(alice: Client, bob: Client) -> None:
    session = alice.create()
    ref = session["id"]
    attempts = [
        bob.request("POST", f"/v1/sessions/{ref}/execute", json={"code": WRITE_PROOF}),
        bob.request("GET", f"/v1/sessions/{ref}"),
        bob.request("DELETE", f"/v1/sessions/{ref}"),
        bob.request("POST", f"/session/{ref}", json={"mode": "query", "code": WRITE_PROOF}),
        bob.request("DELETE", f"/session/{session['name']}"),
    ]
    files = [f["name"] for f in alice.request("GET", f"/v1/sessions/{ref}/files").json()["files"]]
    assert [(r.status_code, r.json()["error"]) for r in attempts] == [(404, "not-found")] * 5
    assert ("proof.txt" in files, alice.request("GET", f"/v1/sessions/{ref}").json()["status"]) == (
        False,
        "running",
    )
    alice.request("DELETE", f"/v1/sessions/{ref}")


def test_session_limit_is_a_clear_json_error(service: Service) -> None:
    limited = service.keypair("--max-sessions", "1")
    first = limited.create()
    second = limited.request("POST", "/v1/sessions", json={"image": "python"})
    assert (second.status_code, second.json()["error"]) == (429, "too-many-sessions")
    assert "limit" in second.json()["msg"]
    limited.request("DELETE", f"/v1/sessions/{first['id']}")


def test_forged_and_stale_creates_create_nothing(alice: Client) -> None:
    before = _session_count(alice)
    stranger = Client(alice.url, "AKIANOSUCHKEY0000000", alice.secret_key)
    impostor = Client(alice.url, alice.access_key, "x" * 40)
    stale = datetime.now(UTC) - timedelta(minutes=16)
    responses = [
        _create_raw(stranger, _signed(stranger, "POST", "/v1/sessions")),
        _create_raw(impostor, _signed(impostor, "POST", "/v1/sessions")),
        _create_raw(alice, _signed(alice, "POST", "/v1/sessions", now=stale)),
    ]
    assert [(r.status_code, r.json()["error"]) for r in responses] == [(401, "auth-failed")] * 3
    assert _session_count(alice) == before


def test_a_replayed_create_creates_one_session_only(alice: Client) -> None:
    before = _session_count(alice)
    headers = _signed(alice, "POST", "/v1/sessions")
    first, again = _create_raw(alice, headers), _create_raw(alice, headers)
    count = _session_count(alice)
    alice.request("DELETE", f"/v1/sessions/{first.json()['id']}")
    assert (first.status_code, again.status_code, again.json()["error"]) == (
        201,
        401,
        "replayed-request",
    )
    assert count == before + 1


def test_a_removed_keypair_is_refused_from_then_on(service: Service) -> None:
    carol = service.keypair()
    allowed = carol.request("GET", "/v1/sessions")
    subprocess.run([*KEYPAIR, "rm", carol.access_key], env=service.env(), check=True)
    refused = carol.request("GET", "/v1/sessions")
    assert (allowed.status_code, refused.status_code, refused.json()["error"]) == (
        200,
        401,
        "auth-failed",
    )
