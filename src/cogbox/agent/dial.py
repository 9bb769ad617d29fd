"""Dial links another process on this host can follow to a kernel's sockets.

A kernel's own dial links (cogbox.kernel.connection) point at `/proc/self/fd/M`: the sockets
the agent proved, reachable only from the agent's process. The manager (Jupyter's relay)
dials from its own process, so the agent keeps a second set per session, `<folder>/<short
id>/k-N -> /proc/<agent pid>/fd/M`, in its 0700 folder, refreshed when the kernel's change (a
restarted kernel's new sockets; zmq reconnects to the new target). Root's manager may follow
another root process's fd links; nobody else can.
"""

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class DialLinks:
    """Per-session links to the agent's proven sockets, for the manager's process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._names: dict[str, str] = {}  # session id -> its short folder name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700, parents=True)

    def info(self, session_id: str, info: dict[str, Any]) -> dict[str, Any]:
        """`info` with `ip` naming this session's links (made or refreshed now)."""
        if info.get("transport") != "ipc":
            return info
        name = self._names.setdefault(session_id, secrets.token_hex(4))
        folder = self.folder / name
        folder.mkdir(mode=0o700, exist_ok=True)
        prefix = str(info["ip"])
        own = f"/proc/{os.getpid()}/"
        for port in _PORTS:
            if port not in info:
                continue
            suffix = f"-{info[port]}"
            try:
                target = os.readlink(prefix + suffix)
            except OSError:
                continue
            if target.startswith("/proc/self/"):
                target = own + target.removeprefix("/proc/self/")
            link = folder / (Path(prefix).name + suffix)
            with contextlib.suppress(OSError):
                if os.readlink(link) == target:
                    continue
            temporary = folder / f".{link.name}.new"
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            os.symlink(target, temporary)
            temporary.replace(link)  # atomic: zmq's reconnects find the new socket
        return {**info, "ip": str(folder / Path(prefix).name)}

    def forget(self, session_id: str) -> None:
        name = self._names.pop(session_id, None)
        if name is not None:
            shutil.rmtree(self.folder / name, ignore_errors=True)
