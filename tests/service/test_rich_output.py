"""A matplotlib figure shown in a cell reaches every surface as PNG: the native API's
`display` event, Backend.AI's `media` console item, Jupyter's `display_data`, and `cogbox run`
(which saves it to a file and says where)."""

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from cogbox.images.store import Image
from tests.service.support import Client, Service, running_service
from tests.service.test_jupyter_api import _api, _auth, _run

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def service(keras_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("rich"), "--pool", "keras=0") as running:
        yield running


@pytest.fixture(scope="module")
def alice(service: Service) -> Client:
    return service.keypair()


def is_png(encoded: str) -> bool:
    return base64.b64decode(encoded).startswith(PNG_MAGIC)


def test_native_run_has_a_display_event_with_a_png(alice: Client) -> None:
    ref = alice.create("keras")["id"]
    result = alice.execute(ref, PLOT)
    alice.request("DELETE", f"/v1/sessions/{ref}")
    displays = [e for e in result["events"] if e["kind"] == "display"]
    assert len(displays) == 1 and is_png(displays[0]["data"]["image/png"]), result


def test_backendai_console_has_a_media_item_with_a_png(alice: Client) -> None:
    created = alice.request("POST", "/session", json={"image": "keras"})
    assert created.status_code == 201, created.text
    ref = created.json()["sessionId"]
    body = {"mode": "query", "code": PLOT, "runId": "plot"}
    ran = alice.request("POST", f"/session/{ref}", json=body).json()["result"]
    alice.request("DELETE", f"/session/{ref}")
    media = [item[1] for item in ran["console"] if item[0] == "media"]
    assert len(media) == 1 and media[0][0] == "image/png" and is_png(media[0][1]), ran


def test_jupyter_channels_carry_display_data_with_a_png(alice: Client) -> None:
    made = _api(alice, "POST", "/api/kernels", json={"name": "cogbox-keras"})
    assert made.status_code == 201, made.text
    kernel_id = made.json()["id"]
    url = alice.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(url, header=_auth(alice), timeout=60)
    try:
        messages = _run(ws, PLOT)
    finally:
        ws.close()
        _api(alice, "DELETE", f"/api/kernels/{kernel_id}")
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    assert len(shown) == 1 and is_png(shown[0]["content"]["data"]["image/png"]), messages


def test_cogbox_run_saves_the_figure_and_says_where(keras_image: Image, tmp_path: Path) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", "from cogbox.cli.run import run; run()", "--image", "keras",
         "-c", PLOT],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    saved = tmp_path / "cogbox-figure-1.png"
    assert ran.returncode == 0, ran.stderr
    assert "[figure saved to cogbox-figure-1.png]" in ran.stderr, ran.stderr
    assert saved.read_bytes().startswith(PNG_MAGIC)
    assert "<Figure" not in ran.stdout, ran.stdout
