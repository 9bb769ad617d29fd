"""The builder: cached by digest, atomic, and clear about what went wrong."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cogbox.config import data_dir
from cogbox.images.builder import BuildError, build_image
from cogbox.images.recipe import load_recipe
from cogbox.images.store import Image, ImageStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building images needs root")


@pytest.fixture
def scratch_store(tmp_path: Path) -> ImageStore:
    """An empty image store that shares the real store's download and base-system cache."""
    return ImageStore(tmp_path / "data", cache_dir=data_dir() / "cache")


def _set_env(recipes: Path, value: str) -> None:
    recipe = recipes / "python" / "recipe.yml"
    recipe.write_text(recipe.read_text().replace("env:\n", f"env:\n  COGBOX_TEST: {value!r}\n"))


def test_unchanged_recipe_is_not_rebuilt(python_image: Image, recipes: Path) -> None:
    steps: list[str] = []
    again = build_image(load_recipe(recipes / "python"), ImageStore(), steps.append)
    assert steps == []
    assert (again.path, again.manifest["built_at"]) == (
        python_image.path,
        python_image.manifest["built_at"],
    )


def test_cli_second_build_reports_ready_without_steps(python_image: Image) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cogbox.cli", "image", "build", "python"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ready python" in proc.stderr and "install" not in proc.stderr


def test_image_ls_json_lists_ready_image(python_image: Image) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cogbox.cli", "image", "ls", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    listed = {i["name"]: i for i in json.loads(proc.stdout) if i["ready"]}
    assert listed["python"]["path"] == str(python_image.path)
    assert listed["python"]["size_bytes"] > 50_000_000


@pytest.mark.slow  # starts a real build (debootstrap, PyPI): network, minutes
def test_missing_pypi_package_is_named(recipes: Path, scratch_store: ImageStore) -> None:
    recipe = recipes / "python" / "recipe.yml"
    recipe.write_text(recipe.read_text().replace("- numpy==2.4.6", "- numpy==0.0.404"))
    with pytest.raises(BuildError, match=r"Python package numpy==0.0.404 was not found on PyPI"):
        build_image(load_recipe(recipes / "python"), scratch_store)
    assert scratch_store.images() == []


@pytest.mark.slow  # starts a real build (debootstrap, PyPI): network, minutes
def test_missing_debian_package_is_named(recipes: Path, scratch_store: ImageStore) -> None:
    recipe = recipes / "python" / "recipe.yml"
    recipe.write_text(recipe.read_text().replace("- python3\n", "- python3\n  - no-such-pkg-x\n"))
    with pytest.raises(
        BuildError,
        match=r"Debian package 'no-such-pkg-x' does not exist in "
        r"bookworm",
    ):
        build_image(load_recipe(recipes / "python"), scratch_store)
    assert [i for i in scratch_store.images() if i.ready] == []


def test_killed_build_leaves_no_ready_image_and_next_build_succeeds(
    recipes: Path, tmp_path: Path, python_image: Image
) -> None:
    _set_env(recipes, "killed")
    env = {
        **os.environ,
        "COGBOX_IMAGES_DIR": str(recipes),
        "COGBOX_DATA_DIR": str(tmp_path / "data"),
    }
    # The scratch store's cache is empty: seed it with the real base system by linking it.
    (tmp_path / "data").mkdir()
    os.symlink(data_dir() / "cache", tmp_path / "data" / "cache")
    build = subprocess.Popen(
        [sys.executable, "-m", "cogbox.cli", "image", "build", "python"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store = ImageStore(tmp_path / "data")
    deadline = time.monotonic() + 120
    while not any(
        (p / "rootfs" / "usr" / "bin").exists() for p in (i.path for i in store.images())
    ):
        assert time.monotonic() < deadline and build.poll() is None, "build never started"
        time.sleep(0.2)
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    listed = store.images()
    assert listed and not any(i.ready for i in listed)
    rebuilt = build_image(load_recipe(recipes / "python"), store)
    assert rebuilt.ready and rebuilt.env["COGBOX_TEST"] == "killed"
    assert [i.path for i in store.images()] == [rebuilt.path]


def _publish_fake(store: ImageStore, name: str) -> Image:
    """A ready image of `name` in `store` without building one: a rootfs folder, a manifest."""
    staging = store.staging_dir(name, "f" * 64)
    (staging / "rootfs").mkdir(parents=True)
    return store.publish(staging, name, "f" * 64, {"name": name, "built_at": "now"})


@pytest.mark.slow  # three CLI processes: ~2 s
def test_image_rm_removes_an_image_and_refuses_one_in_use(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    fake = _publish_fake(store, "fake")
    env = {**os.environ, "COGBOX_DATA_DIR": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cogbox.cli", "image", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, check=False)

    with fake.hold():
        refused = cli("rm", "fake")
    assert refused.returncode != 0 and "in use by a running jail" in refused.stderr
    assert store.find("fake") is not None
    removed = cli("rm", "fake")
    missing = cli("rm", "fake")
    listed = json.loads(cli("ls", "--json").stdout)
    assert (removed.returncode, removed.stdout) == (0, "removed fake (1 folder)\n")
    assert missing.returncode != 0 and "no image named 'fake'" in missing.stderr
    assert listed == []
