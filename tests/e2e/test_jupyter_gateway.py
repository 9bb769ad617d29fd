"""End to end: Jupyter's own client stack against `cogbox serve` as a Jupyter gateway.
nbclient runs notebooks through jupyter_server's `GatewayKernelManager` (REST to start and
stop kernels, its `GatewayKernelClient` WebSocket for the messages), on the python image
and on the seed's CNTK image."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cogbox.images.store import Image
from cogbox.service.auth import jupyter_token
from tests.seed import CNTK_MINUS
from tests.service.support import Client, Service, running_service

CELLS = [
    "x = 6 * 7",
    "print(x)",
    "raise ValueError('boom')",
    "x + 1",
]


@pytest.fixture(scope="module")
def gateway(
    python_image: Image, cntk_image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    """A `cogbox serve` process, and jupyter_server's GatewayClient configured for it."""
    with running_service(tmp_path_factory.mktemp("jupyter-gateway")) as service:
        yield from _gateway_client(service)


def _gateway_client(service: Service) -> Iterator[Client]:
    # Imported here, not at the top: nbformat pulls in jsonschema (seconds of grammar
    # building), which every collection of the fast tier would pay for.
    from jupyter_server.gateway.gateway_client import GatewayClient

    keys = service.keypair()
    token = jupyter_token(keys.access_key, keys.secret_key)
    GatewayClient.clear_instance()
    # The REST calls send `Authorization: token ...`; the client's WebSocket sends no
    # headers, so the token rides in the WebSocket URL's path.
    GatewayClient.instance(
        url=service.url,
        ws_url=f"ws://127.0.0.1:{service.port}/t/{token}",
        auth_token=token,
    )
    try:
        yield keys
    finally:
        GatewayClient.clear_instance()


def _run_notebook(sources: list[str], kernel_name: str) -> list[list[dict[str, Any]]]:
    """Run a notebook of `sources` on a new gateway kernel; its cells' outputs. The kernel
    is shut down through the gateway afterwards."""
    import nbformat  # imported here: see _gateway_client
    from jupyter_server.gateway.managers import GatewayKernelManager
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    manager = GatewayKernelManager()
    client = NotebookClient(notebook, km=manager, timeout=120, allow_errors=True)
    try:
        client.execute(kernel_name=kernel_name)
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        asyncio.run(manager.shutdown_kernel(now=True))
    return [list(cell.outputs) for cell in notebook.cells]


def _stdout(outputs: list[dict[str, Any]]) -> str:
    return "".join(o["text"] for o in outputs if o.get("name") == "stdout")


@pytest.fixture(scope="module")
def python_outputs(gateway: Client) -> list[list[dict[str, Any]]]:
    return _run_notebook(CELLS, "python3")


def test_notebook_cells_keep_state_and_print(python_outputs: list[list[dict[str, Any]]]) -> None:
    assert (_stdout(python_outputs[1]), python_outputs[3][0]["data"]["text/plain"]) == (
        "42\n",
        "43",
    )


def test_notebook_cell_that_raises_reports_the_error(
    python_outputs: list[list[dict[str, Any]]],
) -> None:
    errors = [(o["ename"], o["evalue"]) for o in python_outputs[2] if o["output_type"] == "error"]
    assert errors == [("ValueError", "boom")]


def test_gateway_kernel_is_shut_down_after_the_notebook(
    gateway: Client, python_outputs: list[list[dict[str, Any]]]
) -> None:
    token = jupyter_token(gateway.access_key, gateway.secret_key)
    listed = requests.get(
        gateway.url + "/api/kernels", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert listed.json() == []


def test_cntk_notebook_prints_the_seeds_minus_result(gateway: Client) -> None:
    outputs = _run_notebook(["y = 1", CNTK_MINUS, "print(y)"], "cogbox-cntk")
    assert (_stdout(outputs[1]).strip().splitlines()[-1], _stdout(outputs[2])) == (
        "[-3. -3. -3.]",
        "1\n",
    )
