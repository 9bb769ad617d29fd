"""Shared fixtures: real images built from the repository's recipes (cached by digest)."""

import os
import shutil
from pathlib import Path

import pytest

from cogbox.config import REPO_IMAGES_DIR
from cogbox.images.builder import build_image
from cogbox.images.recipe import load_recipe
from cogbox.images.store import Image, ImageStore


def _built(name: str) -> Image:
    if os.geteuid() != 0:
        pytest.skip("building images needs root")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (run scripts/setup)")
    return build_image(load_recipe(REPO_IMAGES_DIR / name), ImageStore())


@pytest.fixture(scope="session")
def python_image() -> Image:
    """The light `python` image (Debian 12, Python 3.11), built once per data dir."""
    return _built("python")


@pytest.fixture(scope="session")
def cntk_image() -> Image:
    """The seed's `cntk` image (Debian 11, Python 2.7, CNTK 2.7, Keras 2.3.1)."""
    return _built("cntk")


@pytest.fixture(scope="session")
def keras_image() -> Image:
    """The `keras` image (Debian 12, Python 3.11, Keras 3 on JAX, onnxruntime, matplotlib)."""
    return _built("keras")


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    """A writable copy of the repository's images/ folder, for tests that edit recipes."""
    target = tmp_path / "images"
    shutil.copytree(REPO_IMAGES_DIR, target)
    return target


# The fast tier (`scripts/test --fast`, under 30 s on 2 cores): the tests that need no built
# image (so no root or jail) and are not marked `slow`. Mark `slow` a test that starts a real
# image build (network), a real server (PostgreSQL), a protocol suite on a real kernel, or
# more than a second of fresh interpreters: it still runs in the full suite (`scripts/test`,
# the CI command). The manager, the Backend.AI adapter and the Jupyter codec are covered in
# the fast tier through tests/fakes (a FakeAgent at the Agent seam).
_IMAGE_FIXTURES = {"python_image", "cntk_image", "keras_image"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="run only the tests that need no built image (seconds, no root needed)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    keep, drop = [], []
    for item in items:
        needs_image = _IMAGE_FIXTURES & set(getattr(item, "fixturenames", ()))
        (drop if needs_image or item.get_closest_marker("slow") else keep).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
