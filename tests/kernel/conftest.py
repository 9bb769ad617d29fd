"""Fixtures for kernel tests: real jailed sessions of the built images (root and runc needed)."""

import shutil
from collections.abc import Iterator

import pytest

from cogbox.images.store import Image
from cogbox.kernel.session import Session, start_session


@pytest.fixture(scope="module")
def python_session(python_image: Image) -> Iterator[Session]:
    """One python-image session shared by a module's tests (each leaves it idle and alive)."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    with start_session(python_image) as session:
        yield session


@pytest.fixture(scope="module")
def cntk_session(cntk_image: Image) -> Iterator[Session]:
    """One cntk-image (Python 2.7) session shared by a module's tests."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    with start_session(cntk_image) as session:
        yield session
