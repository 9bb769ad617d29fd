"""Storage folders (Backend.AI's "vfolders"): a keypair's own folders, kept across sessions.

Each folder is an ext4 image of exactly its quota (sparse: the host disk is used only as it
fills), loop-mounted by the service at `<vfolders_dir>/<id>/mnt` and kept mounted: the same
mechanism as the work dir's quota (`cogbox.jail.workdir`), but persistent, so several sessions
can bind one folder at once and a write past the quota fails with ENOSPC wherever it comes
from (a jail, an upload). The folders' parents are the service's own (0700, root's): a jail
reaches a folder only through its bind, and the host reaches its files only through the
proven-path walks of `vfolder_files`.

Metadata (owner, name, quota, permission) is in the database; a keypair sees, mounts and
reads only its own folders: another keypair's folder is "not found", never "forbidden", so
names do not leak. A keypair's folders may together claim at most `vfolder_keypair_quota`
(their quotas, not their usage: a quota promised is room reserved).

Mounts follow Backend.AI's rules: `NAME` goes to /home/work/NAME, `NAME=rel/path` to
/home/work/rel/path; an absolute path must lie under /home/work (Backend.AI also allows
other paths off the system's folders, but their mount point would have to be made in the
image that all sessions share: refused, naming the rule). Folders whose name starts with a
dot are mounted into every session of their keypair. Sessions bind
them nosuid,nodev, read-only when the folder's permission is "ro"; whether code in them may
run follows the image policy's OP_EXEC like /home/work (Backend.AI's users keep scripts there).
"""

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cogbox.images.paths import WORKDIR
from cogbox.service.agent import FolderBind
from cogbox.service.config import ServiceConfig
from cogbox.service.db import Database, KeypairRecord, VFolderRecord
from cogbox.service.errors import ServiceError, bad_request, conflict, not_found
from cogbox.service.status import ACTIVE, SessionStatus
from cogbox.sizes import format_size, parse_size

MIN_QUOTA_BYTES = 4 << 20  # mkfs.ext4 makes no useful filesystem much smaller
MAX_FOLDERS_PER_KEYPAIR = 64
PERMISSIONS = ("rw", "ro")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Backend.AI's RESERVED_VFOLDERS: no folder may be named or mounted over these.
RESERVED_PATHS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/home",
)  # fmt: skip
RESERVED_NAMES = (".terminfo", ".jupyter", ".tmux.conf", ".ssh")
_RESERVED_PATTERNS = (re.compile(r"^\.[a-z0-9]+rc$"), re.compile(r"^\.[a-z0-9]+_profile$"))
# The sessions that hold their folders: the active ones but a job still pending.
_HOLDING = [status for status in ACTIVE if status != SessionStatus.PENDING]


@dataclass(frozen=True)
class Usage:
    """Bytes a folder's filesystem holds and can still take, and its number of entries."""

    used_bytes: int
    free_bytes: int
    files: int


@dataclass(frozen=True)
class FolderMount:
    """A folder a new session mounts, where, and how."""

    folder: VFolderRecord
    destination: str
    readonly: bool


def check_name(name: object) -> str:
    """A valid folder name, else 400 naming the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise bad_request(
            f"'name' {name!r} is not a folder name: use 1-64 letters, digits, '.', '_', '-'"
        )
    if name in RESERVED_NAMES or any(p.fullmatch(name) for p in _RESERVED_PATTERNS):
        raise bad_request(f"'name' {name!r} is reserved (Backend.AI mounts it for the system)")
    return name


def parse_mount_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Backend.AI's `-v NAME[=PATH]` (or docker's NAME:PATH) into names and name -> path."""
    names: list[str] = []
    paths: dict[str, str] = {}
    for arg in args:
        sep = "=" if "=" in arg else ":" if ":" in arg else ""
        name, _, path = arg.partition(sep) if sep else (arg, "", "")
        names.append(name)
        if sep:
            paths[name] = path
    return names, paths


def mount_destination(name: str, requested: str | None) -> str:
    """Where folder `name` goes in the jail (Backend.AI's rules), else 400 naming the path."""
    path = requested or name
    if "\0" in path:
        raise bad_request(f"mount path for {name!r} contains a NUL byte")
    pure = PurePosixPath(path)
    if ".." in pure.parts:
        raise bad_request(f"mount path {path!r} for {name!r} contains '..'")
    if not pure.is_absolute():
        pure = PurePosixPath(WORKDIR) / pure
    text = str(pure)
    if text == WORKDIR or text == "/":
        raise bad_request(f"mount path {path!r} for {name!r} would hide {text}")
    if text.startswith(WORKDIR + "/"):
        return text
    if any(text == r or text.startswith(r + "/") for r in RESERVED_PATHS):
        raise bad_request(
            f"mount path {path!r} for {name!r} is over a system folder "
            f"({', '.join(RESERVED_PATHS)} are reserved); use a path under {WORKDIR}"
        )
    # Backend.AI allows other absolute paths; their mount point would have to be made in
    # the image itself, which every session of every keypair shares.
    raise bad_request(
        f"mount path {path!r} for {name!r} is outside {WORKDIR}: cogbox mounts folders "
        f"under {WORKDIR} only (give a relative path or one under {WORKDIR})"
    )


class VFolders:
    """The storage folders of all keypairs, on this host."""

    def __init__(self, db: Database, config: ServiceConfig) -> None:
        self.db = db
        self.root = config.vfolders_dir
        self.default_quota = config.vfolder_quota
        self.keypair_quota = config.vfolder_keypair_quota
        self._lock = asyncio.Lock()  # create/delete/rename of one host's folders, one at a time
        # Mounting runs in worker threads: two first uses of a folder after a restart must not
        # both mount its image (two loop devices over one ext4 would corrupt it).
        self._mounting = threading.Lock()

    # ------------------------------------------------------------------ folders

    async def create(
        self, keypair: KeypairRecord, name: object, quota: object, permission: object
    ) -> VFolderRecord:
        name = check_name(name)
        if permission not in PERMISSIONS:
            raise bad_request(f"'permission' must be one of {', '.join(PERMISSIONS)}")
        quota_bytes = self._quota(quota)
        async with self._lock:
            folders = await asyncio.to_thread(self.db.list_vfolders, keypair.access_key)
            if any(f.name == name for f in folders):
                raise conflict(f"a folder named {name!r} already exists")
            if len(folders) >= MAX_FOLDERS_PER_KEYPAIR:
                raise ServiceError(
                    429,
                    "too-many-vfolders",
                    f"a keypair may have {MAX_FOLDERS_PER_KEYPAIR} folders",
                )
            claimed = sum(f.quota_bytes for f in folders)
            if claimed + quota_bytes > self.keypair_quota:
                raise ServiceError(
                    429,
                    "vfolder-keypair-quota",
                    f"keypair {keypair.access_key}'s folders may hold "
                    f"{format_size(self.keypair_quota)} together; its {len(folders)} folders "
                    f"claim {format_size(claimed)} and {name!r} asks for "
                    f"{format_size(quota_bytes)}: delete a folder or ask for a smaller quota",
                )
            record = VFolderRecord(
                id=str(uuid.uuid4()),
                access_key=keypair.access_key,
                name=name,
                quota_bytes=quota_bytes,
                permission=str(permission),
                created_at=time.time(),
            )
            await asyncio.to_thread(self._make, record)
            await asyncio.to_thread(self.db.add_vfolder, record)
        return record

    async def of_keypair(self, keypair: KeypairRecord) -> list[VFolderRecord]:
        return await asyncio.to_thread(self.db.list_vfolders, keypair.access_key)

    async def find(self, keypair: KeypairRecord, name: str) -> VFolderRecord:
        """The keypair's folder `name` (404 also when only another keypair has one)."""
        for folder in await self.of_keypair(keypair):
            if folder.name == name:
                return folder
        raise not_found(f"no folder named {name!r}")

    async def rename(self, keypair: KeypairRecord, name: str, new_name: object) -> None:
        new_name = check_name(new_name)
        async with self._lock:
            folder = await self.find(keypair, name)
            if any(f.name == new_name for f in await self.of_keypair(keypair)):
                raise conflict(f"a folder named {new_name!r} already exists")
            await asyncio.to_thread(self.db.rename_vfolder, folder.id, new_name)

    async def delete(self, keypair: KeypairRecord, name: str) -> None:
        async with self._lock:
            folder = await self.find(keypair, name)
            holders = await self.holders(folder)
            if holders:
                raise conflict(
                    f"folder {name!r} is mounted by active session(s) {', '.join(holders)}; "
                    "destroy them first"
                )
            await asyncio.to_thread(self.db.remove_vfolder, folder.id)
            await asyncio.to_thread(self._destroy, folder)

    async def holders(self, folder: VFolderRecord) -> list[str]:
        """The active sessions that mount `folder`."""
        return await asyncio.to_thread(self.db.vfolder_holders, folder.id, _HOLDING)

    async def files_root(self, folder: VFolderRecord) -> Path:
        """The mounted root of `folder`'s filesystem (mounted again after a reboot)."""
        return await asyncio.to_thread(self._mounted, folder)

    async def usage(self, folder: VFolderRecord) -> Usage:
        root = await self.files_root(folder)
        fs = os.statvfs(root)
        return Usage(
            used_bytes=(fs.f_blocks - fs.f_bfree) * fs.f_frsize,
            free_bytes=fs.f_bavail * fs.f_frsize,
            files=max(0, fs.f_files - fs.f_ffree - 10),  # ext4 reserves inodes 1-10 (2: the root)
        )

    # ------------------------------------------------------------------ sessions

    async def mounts_for(
        self, keypair: KeypairRecord, names: list[str], paths: dict[str, str]
    ) -> list[FolderMount]:
        """What a new session of `keypair` mounts: the folders it names (404 if one is not
        its own), and its dot-named folders. 400 naming the mount if a path breaks the rules."""
        folders = {f.name: f for f in await self.of_keypair(keypair)}
        unknown = [n for n in (*names, *paths) if n not in folders]
        if unknown:
            raise not_found(f"no folder named {unknown[0]!r} to mount")
        wanted = list(dict.fromkeys([*names, *paths]))
        wanted += [n for n in folders if n.startswith(".") and n not in wanted]
        mounts = [
            FolderMount(
                folders[n], mount_destination(n, paths.get(n)), folders[n].permission == "ro"
            )
            for n in wanted
        ]
        destinations = [m.destination for m in mounts]
        for index, destination in enumerate(destinations):
            for other in destinations[:index]:
                if destination == other or destination.startswith(other + "/"):
                    raise bad_request(f"two folders would be mounted at {destination}")
        return mounts

    async def binds(self, session_id: str, mounts: list[FolderMount]) -> list[FolderBind]:
        """The jail's binds of `mounts` (by folder id, each mounted now), recorded as held by
        `session_id`. A read-write folder no other active session holds is given to the new
        jail's identity."""
        binds = []
        for mount in mounts:
            holders = await self.holders(mount.folder)
            await self.files_root(mount.folder)  # mounted, for the agent to find
            binds.append(
                FolderBind(
                    mount.folder.id,
                    mount.destination,
                    readonly=mount.readonly,
                    give_to_jail=not mount.readonly and not holders,
                )
            )
        await asyncio.to_thread(
            self.db.add_vfolder_mounts, session_id, [m.folder.id for m in mounts]
        )
        return binds

    def unmount_all(self) -> None:
        """Unmount every folder (the service stops; its sessions' jails are gone). The next
        use mounts a folder again; a folder left mounted by a crash is reused as it is."""
        if not self.root.is_dir():
            return
        with self._mounting:
            self._unmount_all()

    def _unmount_all(self) -> None:
        for directory in self.root.iterdir():
            mount_point = directory / "mnt"
            if os.path.ismount(mount_point):
                with contextlib.suppress(ServiceError):
                    _run(["umount", "-l", str(mount_point)], "umount")

    # ------------------------------------------------------------------ on the host

    def _quota(self, quota: object) -> int:
        if quota in (None, "", "0", 0):
            return self.default_quota
        if isinstance(quota, bool) or not isinstance(quota, str | int):
            raise bad_request("'quota' must be a size like '512m' or a number of bytes")
        try:
            size = parse_size(quota)
        except ValueError as exc:
            raise bad_request(f"'quota': {exc}") from exc
        if size < MIN_QUOTA_BYTES:
            raise bad_request(f"'quota' must be at least {format_size(MIN_QUOTA_BYTES)}")
        return size

    def _dir(self, folder: VFolderRecord) -> Path:
        return self.root / folder.id

    def _make(self, folder: VFolderRecord) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        directory = self._dir(folder)
        directory.mkdir(mode=0o700)
        try:
            image = directory / "folder.ext4"
            with open(image, "wb") as handle:
                handle.truncate(folder.quota_bytes)
            # No journal and no root reserve, like the work dir's image: all of the quota
            # is the user's.
            mkfs = ["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal"]
            _run([*mkfs, "-E", "lazy_itable_init=1", str(image)], "mkfs.ext4")
            (directory / "mnt").mkdir(mode=0o700)
            self._mounted(folder)
        except BaseException:
            self._destroy(folder)
            raise

    def _mounted(self, folder: VFolderRecord) -> Path:
        with self._mounting:
            return self._mount(folder)

    def _mount(self, folder: VFolderRecord) -> Path:
        directory = self._dir(folder)
        mount_point = directory / "mnt"
        if not os.path.ismount(mount_point):
            image = str(directory / "folder.ext4")
            _run(["mount", "-o", "loop,nosuid,nodev", image, str(mount_point)], "mount")
            with contextlib.suppress(OSError):
                (mount_point / "lost+found").rmdir()
            os.chmod(mount_point, 0o755)
        return mount_point

    def _destroy(self, folder: VFolderRecord) -> None:
        with self._mounting:
            self._remove(folder)

    def _remove(self, folder: VFolderRecord) -> None:
        directory = self._dir(folder)
        mount_point = directory / "mnt"
        if os.path.ismount(mount_point):
            # Lazy: a process of the host that still has a file open (a download) keeps
            # the filesystem until it closes it; no name leads to it any more.
            _run(["umount", "-l", str(mount_point)], "umount")
        shutil.rmtree(directory, ignore_errors=True)


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ServiceError(503, "vfolder-host", f"{what} is not installed") from exc
    if result.returncode != 0:
        raise ServiceError(
            503, "vfolder-host", f"{what} failed: {result.stderr.strip() or result.returncode}"
        )
