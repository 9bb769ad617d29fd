"""A jail's bundle on the host: its folder, driver record, and the mount points runc needs.

Each jail gets `<data>/run/jails/<id>/` (its `config.json`, runtime log, quota image) and an
entry in runc's own state dir `<data>/run/runc`. The bundle stays flock()ed by the process
that drives the jail; its `driver.json` says who that is, for the reaper (reaper.py).
"""

import contextlib
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Any

from cogbox.config import data_dir
from cogbox.images.paths import WORKDIR
from cogbox.jail.errors import JailError
from cogbox.jail.identity import Identity

DRIVER_FILE = "driver.json"
STAGING_PREFIX = ".new-"


def state_dirs(base: Path | None = None) -> tuple[Path, Path]:
    """(runc's --root state dir, the folder of per-jail bundles) under cogbox's data dir."""
    run = (base or data_dir()) / "run"
    return run / "runc", run / "jails"


def make_bundle(jails_dir: Path, jail_id: str, record: dict[str, Any]) -> tuple[Path, int]:
    """Create and lock the bundle of `jail_id`; returns it and the fd that holds its lock."""
    # Locked before it gets its name: a bundle visible as <id> is always held by a live
    # driver or stale, never "not locked yet", so a concurrent reaper cannot take it.
    staging = jails_dir / f"{STAGING_PREFIX}{jail_id}"
    staging.mkdir(mode=0o700)
    lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # Blocking: a reaper may hold it for a moment while it skips a record-less folder.
    fcntl.flock(lock, fcntl.LOCK_EX)
    bundle = jails_dir / jail_id
    write_driver_record(staging, record)
    os.rename(staging, bundle)
    return bundle, lock


def write_driver_record(bundle: Path, record: dict[str, Any]) -> None:
    temporary = bundle / f"{DRIVER_FILE}.tmp"
    temporary.write_text(json.dumps(record))
    os.replace(temporary, bundle / DRIVER_FILE)


def read_driver_record(bundle: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((bundle / DRIVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def open_to_mapped_root(jails_dir: Path, bundle: Path, identity: Identity) -> None:
    """Let the jail's namespace root (host id `identity.base`) reach its bundle, and only it.

    runc opens bind sources from the host, but gVisor's gofer opens them as the namespace's
    root: a temporary /home/work in the bundle must be reachable by it. Like Docker's
    userns-remap: the jails' folder is 0711 (traversable, not listable), each bundle 0710
    with the group of its own jail's root. The jailed code runs as `host_uid`, which is not
    that group, so it cannot reach any bundle.
    """
    os.chmod(jails_dir, 0o711)
    os.chown(bundle, 0, identity.base)
    os.chmod(bundle, 0o710)


def check_reachable(mounts: list[dict[str, Any]], identity: Identity) -> None:
    """JailError unless the namespace's root can reach every bind source (gVisor's gofer
    opens them as that id, not as host root; runc opens them from the host)."""
    for mount in mounts:
        if mount["type"] != "bind":
            continue
        source = Path(mount["source"])
        for folder in reversed(source.parents):
            st = os.stat(folder)
            if not (
                st.st_mode & stat.S_IXOTH
                or (st.st_uid == identity.base and st.st_mode & stat.S_IXUSR)
                or (st.st_gid == identity.base and st.st_mode & stat.S_IXGRP)
            ):
                raise JailError(
                    f"under runsc, the jail's bind of {mount['destination']} needs its host "
                    f"folder's parents to be traversable by others, and {folder} is not "
                    "(chmod o+x it, or use a folder under a traversable path)"
                )


def make_mount_points(rootfs: Path, mounts: list[dict[str, Any]]) -> None:
    """Create the image's missing bind mount points, as the host's root, before runc runs.

    runc would make them itself, but in the jail's user namespace its root is no root of the
    image's (host root-owned) folders. Never through a link: a link in the image is left to
    runc, which resolves it inside the root filesystem (and names the mount if it fails).
    """
    for mount in mounts:
        if mount["type"] != "bind":
            continue
        if mount["destination"].startswith(WORKDIR + "/"):
            # Inside the bound /home/work (a storage folder's mount point): runc makes it
            # there, in the session's own files, never in the shared image.
            continue
        *folders, name = [part for part in mount["destination"].split("/") if part]
        is_dir = os.path.isdir(mount["source"])
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(rootfs, flags)
        try:
            for folder in folders:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, 0o755, dir_fd=fd)
                child = os.open(folder, flags, dir_fd=fd)
                os.close(fd)
                fd = child
            with contextlib.suppress(FileExistsError):
                if is_dir:
                    os.mkdir(name, 0o755, dir_fd=fd)
                else:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=fd))
        except OSError:
            pass  # a link or something odd on the way: runc decides and says why
        finally:
            os.close(fd)
