"""Fixtures: a running service (SQLite in a temp dir) and keypairs to call it with."""

from collections.abc import Iterator

import pytest

from cogbox.images.store import Image
from tests.service.support import Client, Service, running_service


@pytest.fixture(scope="module")
def service(python_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service process per test module, with a fresh database."""
    with running_service(tmp_path_factory.mktemp("service")) as running:
        yield running


@pytest.fixture(scope="module")
def alice(service: Service) -> Client:
    return service.keypair()


@pytest.fixture(scope="module")
def bob(service: Service) -> Client:
    return service.keypair()
