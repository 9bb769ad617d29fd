"""The agent channel's place on disk and its mutual proof of the agent key.

Locally the channel is a unix socket in `<service dir>/agent/`, a root-only 0700 folder that
also holds the agent key (`agent.key`, 0600) and the agent's pid. Reaching the socket is not
enough: right after the WebSocket opens, each side proves it holds the key by an
HMAC-SHA256 over both sides' fresh nonces (`prove`), the client first, and nothing else is
read before both proofs checked out. A replayed proof fails (the other side's nonce is new
each time) and neither proof can be computed without the key. Across machines the same
proof runs inside TLS with the agent's certificate pinned (tls.py).
"""

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cogbox.agent.errors import AgentAuthError

NONCE_BYTES = 32
KEY_BYTES = 32
HANDSHAKE_TIMEOUT_S = 10.0
CLIENT, AGENT = b"cogbox-manager", b"cogbox-agent"


@dataclass(frozen=True)
class AgentPlace:
    """Where an agent keeps its socket, key, pid and log (and, over TCP, its certificate)."""

    folder: Path

    @property
    def socket(self) -> Path:
        return self.folder / "agent.sock"

    @property
    def key_file(self) -> Path:
        return self.folder / "agent.key"

    @property
    def pid_file(self) -> Path:
        return self.folder / "agent.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / "agent.log"

    @property
    def address_file(self) -> Path:
        """A TCP agent's published host, port and certificate fingerprint (tls.py)."""
        return self.folder / "agent.address"

    @property
    def cert_file(self) -> Path:
        return self.folder / "agent.crt"

    @property
    def tls_key_file(self) -> Path:
        return self.folder / "agent-tls.key"

    def make(self) -> None:
        """The folder, 0700 and ours (never a link someone planted)."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            self.folder.mkdir(mode=0o700)
        info = os.lstat(self.folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise AgentAuthError(f"{self.folder} is not a folder of this user")
        os.chmod(self.folder, 0o700)

    def key(self) -> bytes:
        """The agent key, made (0600, exclusively) on first use."""
        self.make()
        try:
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return read_key(self.key_file)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(KEY_BYTES))
        return read_key(self.key_file)


def read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as source:
        info = os.fstat(source.fileno())
        if info.st_mode & 0o077:
            raise AgentAuthError(f"the agent key {path} is readable by others: make it 0600")
        text = source.read(4 * KEY_BYTES).strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise AgentAuthError(f"the agent key {path} is not hex") from exc
    if len(key) < 16:
        raise AgentAuthError(f"the agent key {path} is too short")
    return key


def nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def prove(key: bytes, role: bytes, agent_nonce: str, client_nonce: str) -> str:
    """The proof that `role` holds `key`, bound to this connection's two nonces."""
    message = role + b"\0" + agent_nonce.encode() + b"\0" + client_nonce.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def check(key: bytes, role: bytes, agent_nonce: str, client_nonce: str, proof: object) -> None:
    expected = prove(key, role, agent_nonce, client_nonce)
    if not isinstance(proof, str) or not hmac.compare_digest(expected, proof):
        raise AgentAuthError("the peer did not prove the agent key")
