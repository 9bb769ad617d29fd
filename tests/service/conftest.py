"""Fixtures: a running service (SQLite in a temp dir) and keypairs to call it with."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from tests.service.support import Client, Service, needs_runc


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service process per test module, with a fresh database."""
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    directory: Path = tmp_path_factory.mktemp("service")
    running = Service(directory, f"sqlite:///{directory / 'cogbox.db'}").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def alice(service: Service) -> Client:
    return service.keypair()


@pytest.fixture(scope="module")
def bob(service: Service) -> Client:
    return service.keypair()
