"""Fixtures for the export tests: the cntk image exported once per session, its seccomp
profile and engine flags, and private engines (started on first use, stopped at the end)."""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.oci import Exported, export_archive, oci_layout
from cogbox.images.store import Image
from cogbox.jail.engine_flags import render_engine_flags
from cogbox.jail.policy import load_policy
from cogbox.jail.seccomp import render_docker_profile
from tests.images import engines


@pytest.fixture(scope="session")
def engines_dir() -> Iterator[Path]:
    """Scratch space for engine state and archives (GBs), removed at the end of the session."""
    base = Path(os.environ.get("COGBOX_TEST_ENGINES_DIR", "/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="cogbox-engines-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def cntk_exported(cntk_image: Image) -> Exported:
    """The cntk image's OCI layout, made afresh once per session (about 10 s)."""
    engines.require("umoci", "skopeo")
    return oci_layout(cntk_image, force=True)


@pytest.fixture(scope="session")
def cntk_oci_archive(cntk_image: Image, cntk_exported: Exported, engines_dir: Path) -> Path:
    archive = engines_dir / "cntk-oci.tar"
    export_archive(cntk_image, "oci", archive)
    return archive


@pytest.fixture(scope="session")
def cntk_docker_archive(cntk_image: Image, cntk_exported: Exported, engines_dir: Path) -> Path:
    archive = engines_dir / "cntk-docker.tar"
    export_archive(cntk_image, "docker-archive", archive)
    return archive


@pytest.fixture(scope="session")
def cntk_seccomp_profile(cntk_image: Image, engines_dir: Path) -> Path:
    """What `cogbox policy render --format docker` prints for the image's own policy."""
    path = engines_dir / "cntk-seccomp.json"
    path.write_text(json.dumps(render_docker_profile(load_policy(cntk_image.policy_path))))
    return path


@pytest.fixture(scope="session")
def cntk_run_flags(cntk_image: Image, cntk_seccomp_profile: Path) -> list[str]:
    """What `cogbox policy render --format docker-run` prints for the image's policy."""
    return render_engine_flags(
        load_policy(cntk_image.policy_path), seccomp_profile=str(cntk_seccomp_profile)
    )


@pytest.fixture(scope="session")
def podman_storage(engines_dir: Path) -> Iterator[Path]:
    """A private containers-storage shared by podman and buildah."""
    engines.require("podman")
    state = engines_dir / "containers"
    yield state
    engines.reset_containers_storage(state)


@pytest.fixture(scope="session")
def podman(podman_storage: Path) -> engines.Run:
    return engines.podman(podman_storage)


@pytest.fixture(scope="session")
def docker(engines_dir: Path) -> Iterator[engines.Run]:
    engines.require("dockerd", "docker")
    with engines.dockerd(engines_dir / "docker") as run:
        yield run


@pytest.fixture(scope="session")
def ctr(engines_dir: Path) -> Iterator[engines.Run]:
    engines.require("containerd", "ctr")
    with engines.containerd(engines_dir / "containerd") as run:
        yield run


@pytest.fixture(scope="session")
def registry(engines_dir: Path) -> Iterator[str]:
    engines.require("docker-registry")
    with engines.registry(engines_dir / "registry") as address:
        yield address
