"""The image store: the one place that knows how built images are laid out on disk.

    <data>/images/<name>/<digest>/rootfs/        the root filesystem
    <data>/images/<name>/<digest>/manifest.json  written last: its presence means "ready"
    <data>/images/<name>/<digest>/oci/           its OCI image layout, once exported
    <data>/images/<name>/<digest>/exports.json   its exports and pushes, with digests
    <data>/images/<name>/.staging-<digest>-<pid>/ a build in progress (never "ready")
    <data>/images/<name>/.lock                   held while a build of <name> runs
    <data>/cache/                                 downloads and base systems reused by builds

A ready image is only ever created by renaming a finished staging folder, which is atomic, so
a build that fails or is killed can leave staging folders behind but never a ready image.
"""

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from cogbox.config import data_dir
from cogbox.errors import CogboxError
from cogbox.images.manifest import ImageManifest, parse_manifest
from cogbox.images.paths import POLICY_PATH

MANIFEST = "manifest.json"
STAGING_PREFIX = ".staging-"


class ImageInUse(CogboxError):
    """The image cannot be removed: a running jail holds it."""


class ImageNotFound(CogboxError):
    """No ready image of that name."""


@dataclass(frozen=True)
class Image:
    """A built image: where its root filesystem is and what its manifest says."""

    name: str
    digest: str
    path: Path
    ready: bool
    manifest: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def oci_dir(self) -> Path:
        """The OCI image layout `cogbox image export` makes from the rootfs (images/oci.py)."""
        return self.path / "oci"

    @property
    def exports_path(self) -> Path:
        """JSON record of the image's OCI export, archives and pushes (images/oci.py)."""
        return self.path / "exports.json"

    @cached_property
    def info(self) -> ImageManifest:
        """The manifest, typed; ImageManifestError naming the field a bad one got wrong."""
        return parse_manifest(self.manifest, self.path / MANIFEST)

    @property
    def size_bytes(self) -> int:
        return self.info.size_bytes

    @property
    def env(self) -> dict[str, str]:
        return dict(self.info.env)

    @property
    def policy_path(self) -> Path:
        """The image's default jail policy, as installed in the root filesystem."""
        return self.rootfs / POLICY_PATH.lstrip("/")

    def hold(self) -> IO[str]:
        """Mark the image in use until the returned handle is closed (a shared lock on its
        manifest): a rebuild then keeps this version instead of deleting it under a jail."""
        handle = open(self.path / MANIFEST)  # noqa: SIM115 - the caller owns the handle
        fcntl.flock(handle, fcntl.LOCK_SH)
        return handle

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "path": str(self.path),
            "rootfs": str(self.rootfs),
            "size_bytes": self.size_bytes,
            "ready": self.ready,
            "built_at": self.info.built_at,
            "build_seconds": self.info.build_seconds,
        }


class ImageStore:
    """Built images under one data directory."""

    def __init__(self, root: Path | None = None, cache_dir: Path | None = None) -> None:
        self.root = root or data_dir()
        self.images_dir = self.root / "images"
        # Separable so tests can use a scratch store yet reuse the downloads and base systems.
        self.cache_dir = cache_dir or self.root / "cache"

    def images(self) -> list[Image]:
        """Every image folder, ready or not (a staging folder is listed with ready=False)."""
        found: list[Image] = []
        if not self.images_dir.is_dir():
            return found
        for name_dir in sorted(self.images_dir.iterdir()):
            if not name_dir.is_dir():
                continue
            for entry in sorted(name_dir.iterdir()):
                if not entry.is_dir():
                    continue
                if entry.name.startswith(STAGING_PREFIX):
                    digest = entry.name[len(STAGING_PREFIX) :].rsplit("-", 1)[0]
                    found.append(Image(name_dir.name, digest, entry, False, {}))
                    continue
                manifest = _read_manifest(entry)
                found.append(
                    Image(name_dir.name, entry.name, entry, manifest is not None, manifest or {})
                )
        return found

    def find(self, name: str, digest: str | None = None) -> Image | None:
        """The newest ready image `name` (with that digest, if given), or None."""
        ready = [
            i for i in self.images() if i.name == name and i.ready and digest in (None, i.digest)
        ]
        return max(ready, key=lambda i: i.info.built_at or "", default=None)

    def prune(self, name: str, keep: str) -> list[Path]:
        """Delete versions of `name` other than digest `keep` that no jail holds."""
        removed = []
        for image in self.images():
            if image.name != name or image.digest == keep or not image.ready:
                continue
            handle = _unused(image.path)
            if handle is None:
                continue  # in use: a later build or `image rm` removes it
            with handle:
                shutil.rmtree(image.path, ignore_errors=True)
            removed.append(image.path)
        return removed

    def get(self, name: str) -> Image:
        image = self.find(name)
        if image is None:
            raise ImageNotFound(
                f"no ready image named {name!r}; build it with `cogbox image build {name}`"
            )
        return image

    def remove(self, name: str) -> int:
        """Delete every folder of image `name`; returns how many were removed. Raises
        ImageInUse, deleting nothing, while a jail or kernel holds a version of it."""
        name_dir = self.images_dir / name
        if not name_dir.is_dir():
            raise ImageNotFound(f"no image named {name!r}")
        with self.lock(name), contextlib.ExitStack() as held:
            folders = [e for e in name_dir.iterdir() if e.is_dir()]
            for folder in folders:
                if not (folder / MANIFEST).is_file():
                    continue  # a staging folder: nothing can hold it
                handle = _unused(folder)
                if handle is None:
                    raise ImageInUse(
                        f"image {name!r} ({folder.name[:12]}) is in use by a running jail "
                        "or kernel (a session, a warm pool): stop those first"
                    )
                held.enter_context(handle)
            for folder in folders:
                shutil.rmtree(folder)
        shutil.rmtree(name_dir, ignore_errors=True)
        return len(folders)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive per-name lock, so two builds of one image never interleave."""
        name_dir = self.images_dir / name
        name_dir.mkdir(parents=True, exist_ok=True)
        with open(name_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def staging_dir(self, name: str, digest: str) -> Path:
        return self.images_dir / name / f"{STAGING_PREFIX}{digest}-{os.getpid()}"

    def remove_stale_staging(self, name: str) -> None:
        """Remove staging folders of builds that are no longer running (call under the lock)."""
        name_dir = self.images_dir / name
        for entry in name_dir.glob(f"{STAGING_PREFIX}*"):
            pid = entry.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or not _alive(int(pid)) or int(pid) == os.getpid():
                shutil.rmtree(entry, ignore_errors=True)

    def publish(self, staging: Path, name: str, digest: str, manifest: dict[str, Any]) -> Image:
        """Write the manifest, then atomically rename staging into place; drop older digests."""
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        final = self.images_dir / name / digest
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        self.prune(name, keep=digest)
        image = self.find(name, digest)
        assert image is not None
        return image


def _unused(folder: Path) -> IO[str] | None:
    """An exclusive lock on the image version in `folder`, held until the returned handle
    is closed; None while a jail holds the version (see `Image.hold`)."""
    handle = open(folder / MANIFEST)  # noqa: SIM115 - the caller owns the handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
