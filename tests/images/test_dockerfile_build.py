"""The rendered cntk Dockerfile builds with Debian 12's buildah, from `bitnami/minideb:<suite>`
made locally (nothing can be pulled), and gives the local build's image: same packages and
versions, no larger, running the seed."""

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.config import REPO_IMAGES_DIR
from cogbox.images.dockerfile import render_dockerfile
from cogbox.images.oci import Exported
from cogbox.images.plan import SLIM_SCRIPT
from cogbox.images.recipe import canonical_name, load_recipe
from cogbox.images.rootfs import run_in_rootfs
from cogbox.images.store import Image, ImageStore
from tests.images import engines
from tests.seed import CNTK_SQUARED_ERROR, HELLO_WORLD, KERAS_BACKEND

pytestmark = pytest.mark.slow

BUILT = "localhost/cogbox-dockerfile/cntk:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _import_minideb(podman_storage: Path, suite: str, scratch: Path) -> None:
    """Tag the builder's debootstrap base as bitnami/minideb:<suite>, slimmed the way minideb
    is (docs, man pages, locales, apt lists removed), since no registry can be reached."""
    base = ImageStore().cache_dir / "base" / suite
    assert (base / ".complete").exists(), "the local build's base system is missing"
    rootfs = scratch / "minideb"
    subprocess.run(["cp", "-a", "--reflink=auto", f"{base}/.", str(rootfs)], check=True)
    (rootfs / ".complete").unlink()
    removals = "\n".join(line for line in SLIM_SCRIPT.splitlines() if line.startswith("rm "))
    slimmed = run_in_rootfs(rootfs, ["/bin/sh", "-ec", removals])
    assert slimmed.returncode == 0, slimmed.stderr
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*", "-c", "."],
        stdout=subprocess.PIPE,
    )
    imported = subprocess.run(
        [*engines.podman_argv(podman_storage), "import", "--change", 'CMD ["/bin/bash"]', "-"],
        stdin=tar.stdout,
        capture_output=True,
        check=False,
    )
    assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
    image_id = imported.stdout.decode().strip()
    engines.podman(podman_storage)("tag", image_id, f"docker.io/bitnami/minideb:{suite}")


@pytest.fixture(scope="module")
def dockerfile_image(
    cntk_image: Image, podman: engines.Run, podman_storage: Path, engines_dir: Path
) -> Iterator[str]:
    """The cntk Dockerfile built by buildah (about two minutes: apt, PyPI, strip)."""
    engines.require("buildah")
    loaded = load_recipe(REPO_IMAGES_DIR / "cntk")
    scratch = Path(tempfile.mkdtemp(dir=engines_dir, prefix="dockerfile-"))
    _import_minideb(podman_storage, loaded.recipe.base.suite, scratch)
    dockerfile = scratch / "Dockerfile"
    dockerfile.write_text(render_dockerfile(loaded))
    args = ["bud", "--network", "host", "--isolation", "chroot", "--layers=false"]
    if HOST_CA.exists():  # a TLS-intercepting proxy's CA, if this machine trusts one
        args += ["-v", f"{HOST_CA}:/run/cogbox-ca.crt:ro"]
        args += ["--build-arg", "PIP_CERT=/run/cogbox-ca.crt"]
    buildah = engines.buildah(podman_storage)
    buildah(*args, "-f", str(dockerfile), "-t", BUILT, str(REPO_IMAGES_DIR / "cntk"), timeout=900)
    shutil.rmtree(scratch, ignore_errors=True)
    yield BUILT
    podman("rmi", "--force", BUILT, check=False)


@pytest.fixture(scope="module")
def run_built(podman: engines.Run, dockerfile_image: str, cntk_run_flags: list[str]) -> engines.Run:
    """Run a command in the built image under the cntk policy's flags and seccomp profile."""

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return podman("run", "--rm", *cntk_run_flags, dockerfile_image, *argv)

    return run


def test_dockerfile_image_runs_the_seed(run_built: engines.Run) -> None:
    proc = run_built("python", "-c", "\n".join([HELLO_WORLD, CNTK_SQUARED_ERROR, KERAS_BACKEND]))
    lines = proc.stdout.splitlines()
    assert (lines[0], lines[-2], lines[-1]) == ("hello world", "[ 29.]", "keras"), proc.stderr


def test_dockerfile_image_has_the_local_builds_debian_packages(
    run_built: engines.Run, cntk_image: Image
) -> None:
    out = run_built("dpkg-query", "-W", "-f", "${Package}=${Version}\\n").stdout
    built = dict(line.split("=", 1) for line in out.splitlines())
    assert built == cntk_image.manifest["debian_packages"]


def test_dockerfile_image_has_the_local_builds_python_packages(
    run_built: engines.Run, cntk_image: Image
) -> None:
    out = run_built("python", "-m", "pip", "list", "--format=freeze").stdout
    built = {
        canonical_name(n): v for n, v in (x.split("==") for x in out.splitlines() if "==" in x)
    }
    local = {canonical_name(n): v for n, v in cntk_image.manifest["python_packages"].items()}
    assert built == local


def test_dockerfile_image_is_no_larger_than_the_local_rootfs(
    podman: engines.Run, dockerfile_image: str, cntk_image: Image, cntk_exported: Exported
) -> None:
    """Its layers (as tar) against the rootfs on disk (`du`, what `image ls` shows). Against
    the rootfs as one tar it is 0.4% larger: the base layer's copies of files the `RUN`
    rewrites or deletes (the dpkg database, for one), which no Dockerfile can avoid."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", dockerfile_image).stdout)
    assert size <= cntk_image.size_bytes, (size, cntk_image.size_bytes)
    assert size <= cntk_exported.layer_tar_bytes * 1.01
