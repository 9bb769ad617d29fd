"""Creating a session of an image not built yet builds it first, showing the build's steps.

The service reads recipes from a scratch copy of images/ holding a copy of the `python`
recipe under a fresh name with one more environment variable, so it must really be built.
The build uses the real data dir's image store, so its cache/ (wheels, the debootstrapped
base system) is shared and the build takes seconds, not a debootstrap; the image is removed
at the end.
"""

import asyncio
import contextlib
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cogbox.config import REPO_IMAGES_DIR
from cogbox.images.store import Image, ImageNotFound, ImageStore
from cogbox.service.client import Endpoint, ServiceClient
from tests.service.support import Client, Service, running_service, stdout_of


@pytest.fixture(scope="module")
def image_name() -> str:
    return f"ondemand-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def recipes(image_name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of images/ plus `python` renamed to `image_name`, with a tiny env change."""
    target = tmp_path_factory.mktemp("recipes") / "images"
    shutil.copytree(REPO_IMAGES_DIR, target)
    folder = target / image_name
    shutil.copytree(REPO_IMAGES_DIR / "python", folder)
    recipe = (folder / "recipe.yml").read_text()
    recipe = recipe.replace("name: python\n", f"name: {image_name}\n", 1)
    recipe = recipe.replace("env:\n", 'env:\n  COGBOX_ON_DEMAND: "yes"\n', 1)
    (folder / "recipe.yml").write_text(recipe)
    return target


@pytest.fixture(scope="module")
def service(
    python_image: Image, recipes: Path, image_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    if shutil.which("debootstrap") is None:
        pytest.skip("building images needs debootstrap (run scripts/setup)")
    directory = tmp_path_factory.mktemp("service")
    try:
        with running_service(directory, extra_env={"COGBOX_IMAGES_DIR": str(recipes)}) as running:
            yield running
    finally:
        with contextlib.suppress(ImageNotFound):
            ImageStore().remove(image_name)


@pytest.fixture(scope="module")
def alice(service: Service) -> Client:
    return service.keypair()


def _watch(alice: Client, name: str, stop: threading.Event, seen: list[dict[str, Any]]) -> None:
    """Poll the session (by name) while it is being created, as the CLI client does."""
    while not stop.is_set():
        try:
            response = alice.request("GET", f"/v1/sessions/{name}", timeout=5)
        except requests.RequestException:
            response = None
        if response is not None and response.ok:
            seen.append(response.json())
        time.sleep(0.2)


@pytest.fixture(scope="module")
def progress_shown() -> list[str]:
    return []


@pytest.fixture(scope="module")
def built_session(
    alice: Client, image_name: str, progress_shown: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A session of the unbuilt image, created by the CLI's client (which waits for the
    build, telling `progress_shown` each step), and what polling its GET showed meanwhile."""
    name = f"ondemand-{secrets.token_hex(3)}"
    stop = threading.Event()
    seen: list[dict[str, Any]] = []
    watcher = threading.Thread(target=_watch, args=(alice, name, stop, seen), daemon=True)
    watcher.start()
    endpoint = Endpoint(alice.url, alice.access_key, alice.secret_key)

    async def create() -> dict[str, Any]:
        async with ServiceClient(endpoint) as client:
            return await client.create_session(
                image_name, name=name, on_progress=progress_shown.append
            )

    try:
        created = asyncio.run(create())
    finally:
        stop.set()
        watcher.join()
    return created, seen


def test_session_of_an_unbuilt_image_records_build_steps_before_it_runs(
    alice: Client, built_session: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    created, _ = built_session
    events = alice.request("GET", f"/v1/sessions/{created['id']}/events").json()["events"]
    kinds = [e["kind"] for e in events]
    steps = [e["message"] for e in events if e["kind"] == "image_build"]
    assert created["status"] == "running"
    assert steps and "install Python packages" in " ".join(steps), events
    assert kinds.index("building") < kinds.index("image_build") < kinds.index("running")


def test_session_get_shows_building_and_the_current_step_meanwhile(
    built_session: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, seen = built_session
    building = [s for s in seen if s["status"] == "building"]
    assert building and all(s["progress"] for s in building), seen


def test_the_cli_client_shows_the_build_steps_while_it_waits(
    alice: Client,
    image_name: str,
    progress_shown: list[str],
    built_session: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    # It polls, so it shows the steps current at each poll: some of them, in order.
    created, _ = built_session
    events = alice.request("GET", f"/v1/sessions/{created['id']}/events").json()["events"]
    steps = [
        f"building image {image_name}: {e['message']} ..."
        for e in events
        if e["kind"] == "image_build"
    ]
    assert progress_shown and all(line in steps for line in progress_shown), progress_shown
    assert [steps.index(line) for line in progress_shown] == sorted(
        steps.index(line) for line in progress_shown
    )


def test_code_runs_in_the_session_of_the_built_image(
    alice: Client, built_session: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    created, _ = built_session
    assert stdout_of(alice.execute(created["id"], "print(6 * 7)")) == "42\n"


def test_unknown_image_is_a_404_naming_it_and_the_known_recipes(alice: Client) -> None:
    response = alice.request("POST", "/v1/sessions", json={"image": "no-such-image"})
    body = response.json()
    assert (response.status_code, body["error"]) == (404, "image-not-found")
    assert "'no-such-image'" in body["msg"] and "python" in body["msg"], body
