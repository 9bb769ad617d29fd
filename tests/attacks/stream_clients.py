"""WebSocket clients of each surface for the stream attacks and the flood benchmark."""

import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import websocket

from cogbox.service.auth import jupyter_token, signed_headers
from tests.service.support import Client


def flood_code(megabytes: int) -> str:
    """Code that prints `megabytes` MiB in 1 MiB writes, each flushed (one message each)."""
    return (
        "import sys\nchunk = 'x' * (1 << 20)\n"
        f"for _ in range({megabytes}):\n    sys.stdout.write(chunk); sys.stdout.flush()\n"
        "print('flood done')\n"
    )


def forged_error_flood(megabytes: int) -> str:
    """Code that publishes `megabytes` 1 MiB `error` messages on iopub itself, as a hostile
    kernel can: the session's output cap never counts errors."""
    return (
        "k = get_ipython().kernel\n"
        "parent = k.get_parent('shell') if hasattr(k, 'get_parent') else k._parent_header\n"
        "content = {'ename': 'Flood', 'evalue': 'x' * (1 << 20), 'traceback': []}\n"
        f"for _ in range({megabytes}):\n"
        "    k.session.send(k.iopub_socket, 'error', content, parent=parent)\n"
        "print('flood done')\n"
    )


def signed_ws_headers(keys: Client, path: str) -> list[str]:
    headers = signed_headers(
        access_key=keys.access_key,
        secret_key=keys.secret_key,
        method="GET",
        path_with_query=path,
        host=urlsplit(keys.url).netloc,
        content_type="application/octet-stream",
    )
    del headers["Content-Type"]
    return [f"{name}: {value}" for name, value in headers.items()]


def ws_url(keys: Client, path: str) -> str:
    return "ws://" + urlsplit(keys.url).netloc + path


def jupyter_channels(
    keys: Client, kernel_id: str, *, token_in_path: bool = False, **options: Any
) -> websocket.WebSocket:
    token = jupyter_token(keys.access_key, keys.secret_key)
    path = f"/api/kernels/{kernel_id}/channels?token={token}"
    if token_in_path:  # as jupyter_server's gateway client connects
        path = f"/t/{token}/api/kernels/{kernel_id}/channels"
    return websocket.create_connection(ws_url(keys, path), **options)


def execute_request(code: str) -> str:
    """A Jupyter execute_request for the shell channel, as JSON."""
    msg_id = uuid.uuid4().hex
    return json.dumps(
        {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "bench",
                "session": uuid.uuid4().hex,
                "version": "5.3",
                "date": "",
            },
            "parent_header": {},
            "metadata": {},
            "content": {"code": code, "silent": False, "allow_stdin": False},
            "channel": "shell",
        }
    )


def native_stream(keys: Client, ref: str, **options: Any) -> websocket.WebSocket:
    path = f"/v1/sessions/{ref}/stream"
    return websocket.create_connection(
        ws_url(keys, path), header=signed_ws_headers(keys, path), **options
    )


def backendai_stream(keys: Client, ref: str, **options: Any) -> websocket.WebSocket:
    path = f"/stream/session/{ref}/execute"
    return websocket.create_connection(
        ws_url(keys, path), header=signed_ws_headers(keys, path), **options
    )
