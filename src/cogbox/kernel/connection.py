"""A kernel's runtime directory and Jupyter connection file, as the host and the jail see it.

The kernel listens on Unix sockets (`transport="ipc"`), not TCP: the jail has no network,
and a directory bind-mounted into the jail is how the host reaches it. One short directory
per kernel on the host (`/run/cogbox/s/<8 hex>`, because a socket path must fit in the
107 bytes of `sockaddr_un`) is bound read-write at `/run/cogbox` inside the jail, where the
kernel finds its connection file (ipykernel 4.10 rewrites it, so it must be writable) and
creates its sockets `k-1` ... `k-5`.
"""

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo

from cogbox.images.plan import JAIL_RUNTIME_DIR  # where the jail sees the runtime directory
from cogbox.jail.identity import Identity
from cogbox.kernel.errors import KernelError

CONNECTION_FILE = "kernel.json"
SOCKET_PREFIX = "k"  # sockets are "<dir>/k-<port>"
_PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the final NUL


def runtime_base() -> Path:
    """Where runtime directories go: /run/cogbox/s as root, else a short folder in /tmp."""
    if os.geteuid() == 0:
        return Path("/run/cogbox/s")
    return Path(f"/tmp/cogbox-{os.getuid()}/s")


@dataclass(frozen=True)
class RuntimeDir:
    """One kernel's runtime directory on the host, and the key that signs its messages."""

    path: Path
    key: str

    @classmethod
    def create(cls, base: Path | None = None) -> "RuntimeDir":
        """A fresh directory, given to a jail's identity by `give_to` before it starts."""
        base = base or runtime_base()
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        for _ in range(16):
            path = base / secrets.token_hex(4)
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                continue
            break
        else:
            raise KernelError(f"cannot create a kernel runtime directory in {base}")
        longest = f"{path}/{SOCKET_PREFIX}-{max(_PORTS.values())}"
        if len(longest.encode()) > _MAX_SOCKET_PATH:
            shutil.rmtree(path, ignore_errors=True)
            raise KernelError(
                f"kernel socket path {longest} is longer than the {_MAX_SOCKET_PATH} bytes "
                "a Unix socket address can hold; use a shorter runtime directory"
            )
        runtime = cls(path, secrets.token_hex(32))
        connection = runtime.connection_info(JAIL_RUNTIME_DIR)
        file = path / CONNECTION_FILE
        file.write_text(json.dumps(connection, indent=1))
        return runtime

    def give_to(self, identity: Identity) -> None:
        """Make the folder and its connection file the jail's (its host ids), as root."""
        if os.geteuid() != 0:
            return
        ids = (identity.host_uid, identity.host_gid)
        # Never through a link: an earlier kernel of the session could have left one.
        os.chown(self.path, *ids, follow_symlinks=False)
        with contextlib.suppress(FileNotFoundError):
            os.chown(self.path / CONNECTION_FILE, *ids, follow_symlinks=False)

    def connection_info(self, directory: str | None = None) -> KernelConnectionInfo:
        """Jupyter connection info with sockets under `directory` (default: the host path)."""
        return KernelConnectionInfo(
            shell_port=_PORTS["shell_port"],
            iopub_port=_PORTS["iopub_port"],
            stdin_port=_PORTS["stdin_port"],
            control_port=_PORTS["control_port"],
            hb_port=_PORTS["hb_port"],
            ip=f"{directory or self.path}/{SOCKET_PREFIX}",
            transport="ipc",
            key=self.key,
            signature_scheme="hmac-sha256",
            kernel_name="",
        )

    @property
    def log(self) -> Path:
        """Host-only file for the kernel process's own stdout/stderr (beside, not inside)."""
        return self.path.with_suffix(".log")

    def clear_sockets(self) -> None:
        """Remove the socket files a previous kernel left, before a new one starts here."""
        for port in _PORTS.values():
            (self.path / f"{SOCKET_PREFIX}-{port}").unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.log.unlink(missing_ok=True)


def channel_endpoint(info: Mapping[str, Any], channel: str) -> str:
    """The ZMQ address of `channel` ("shell", "iopub", ...) in a kernel's connection info."""
    transport = str(info.get("transport") or "tcp")
    join = ":" if transport == "tcp" else "-"  # tcp://ip:port, ipc://path-port
    return f"{transport}://{info['ip']}{join}{info[f'{channel}_port']}"
