"""Remove what jails whose driving process died left behind (container, cgroups, mounts).

A live driver holds an flock on its bundle (bundle.py), so a bundle that can be locked is
stale. Safe to run concurrently with live jails; `reap_once` runs it once per process.
"""

import contextlib
import fcntl
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from cogbox.errors import CogboxError
from cogbox.jail.bundle import STAGING_PREFIX, read_driver_record, state_dirs
from cogbox.jail.cgroups import DEFAULT_ROOT, CgroupError, JailCgroup
from cogbox.jail.identity import Identity, reap_stale_identities
from cogbox.jail.workdir import Workdir, WorkdirError

# Bundles from before driver.json existed cannot say whether their driver lives; none may
# outlive the default wall time limit.
_LEGACY_BUNDLE_MAX_AGE_SECONDS = 86400.0


def reap_stale_jails(
    *, state_dir: Path | None = None, cgroup_root: Path = DEFAULT_ROOT
) -> list[str]:
    """Remove what jails whose driving process died left behind; returns their ids.

    A live driver holds an flock on its bundle, so a bundle that can be locked is stale:
    its container is deleted (`runc delete --force` kills what still runs), its cgroups
    killed and removed, /home/work's quota filesystem copied back to the caller's directory
    and unmounted, and the bundle removed. Bundles from launchers before the lock existed
    are reaped only once older than a day. Then the host identities those drivers held are
    freed, once no process uses their ids. Safe to run concurrently with live jails.
    """
    runtime_root, jails_dir = state_dirs(state_dir)
    reaped: list[str] = []
    try:
        entries = sorted(jails_dir.iterdir())
    except FileNotFoundError:
        entries = []
    for entry in entries:
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # removed meanwhile, or not a directory
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its driver is alive
            record = read_driver_record(entry)
            if record is None:
                # No record: a launcher older than the lock, or gone while we looked.
                age = time.time() - os.fstat(fd).st_mtime
                if not entry.exists() or age < _LEGACY_BUNDLE_MAX_AGE_SECONDS:
                    continue
            jail_id = entry.name.removeprefix(STAGING_PREFIX)
            with contextlib.suppress(OSError, CogboxError):
                if _reap(entry, jail_id, record or {}, runtime_root, cgroup_root):
                    reaped.append(jail_id)
        finally:
            os.close(fd)
    with contextlib.suppress(OSError, CogboxError):
        reap_stale_identities()
    return reaped


def _reap(
    bundle: Path, jail_id: str, record: dict[str, Any], runtime_root: Path, cgroup_root: Path
) -> bool:
    runtime = str(record.get("runtime") or "runc")
    if shutil.which(runtime) is not None:
        subprocess.run(
            [runtime, "--root", str(runtime_root), "delete", "--force", jail_id],
            capture_output=True,
            check=False,
        )
    with contextlib.suppress(CgroupError):
        cgroup = JailCgroup(jail_id, root=cgroup_root)
        cgroup.kill_all()
        cgroup.remove()
    mount = bundle / "workdir"
    if os.path.ismount(mount):
        home = record.get("workdir")
        slot = record.get("identity")
        workdir = Workdir(
            Path(home) if home else bundle / "home",
            mount,
            owned=not home,
            image=bundle / "workdir.ext4",
            owner=Identity(slot) if isinstance(slot, int) else None,
        )
        with contextlib.suppress(WorkdirError, OSError):
            workdir.close()
        if os.path.ismount(mount):
            return False
    shutil.rmtree(bundle, ignore_errors=True)
    return True


_reaped_state_dirs: set[tuple[Path | None, Path]] = set()
_reap_lock = threading.Lock()


def reap_once(state_dir: Path | None, cgroup_root: Path) -> None:
    """`reap_stale_jails` the first time a process asks for this data dir, best effort."""
    # Once per process and data dir: what a crashed predecessor left is found at the first
    # start; later stale bundles are from drivers that died while this one ran.
    key = (state_dir, cgroup_root)
    with _reap_lock:
        if key in _reaped_state_dirs:
            return
        _reaped_state_dirs.add(key)
    # Best effort: leftovers of others must never keep this jail from starting.
    with contextlib.suppress(OSError, CogboxError):
        reap_stale_jails(state_dir=state_dir, cgroup_root=cgroup_root)
