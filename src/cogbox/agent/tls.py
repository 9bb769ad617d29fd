"""The agent channel across machines: TCP with TLS 1.3, the agent's certificate pinned.

An agent started with `--listen tcp://HOST:PORT` makes a self-signed certificate in its 0700
folder (once; later starts reuse it, so a copied fingerprint stays good), serves TLS 1.3 and
nothing older, and publishes its address and the certificate's SHA-256 fingerprint in
`agent.address` (0600, written atomically). The manager trusts no CA: it connects only to
the certificate with that fingerprint (a man in the middle with any other certificate is
refused before a byte of the channel is sent), and then the mutual HMAC proof of the agent
key (channel.py) runs on top, unchanged. TLS keeps the channel private and ties it to the
agent's certificate; the key proof ties it to a holder of the agent key.
"""

import contextlib
import hashlib
import json
import os
import socket
import ssl
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cogbox.agent.channel import AgentPlace
from cogbox.agent.wire import AgentAuthError, ChannelError

CERT_DAYS = 3650
_WILDCARDS = ("", "0.0.0.0", "::")
_MAX_ADDRESS_FILE = 4096


@dataclass(frozen=True)
class AgentAddress:
    """Where a TCP agent listens, and the SHA-256 (hex) of the certificate it must show."""

    host: str
    port: int
    fingerprint: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def parse_listen(text: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` (PORT 0: any free port) as (host, port); ValueError naming the form."""
    if not text.startswith("tcp://"):
        raise ValueError(f"--listen {text!r}: give tcp://HOST:PORT")
    host, sep, port = text.removeprefix("tcp://").rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: give tcp://HOST:PORT, PORT 0..65535")
    return host, int(port)


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def certificate(place: AgentPlace) -> str:
    """The agent's certificate and key in its folder (made with openssl if missing, the key
    0600); returns the certificate's fingerprint."""
    place.make()
    if not (place.cert_file.exists() and place.tls_key_file.exists()):
        for path in (place.cert_file, place.tls_key_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            # created 0600 first, so openssl (which keeps an existing file's mode) never
            # leaves the private key readable for a moment
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        command = [
            *("openssl", "req", "-x509", "-newkey", "ec"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", str(CERT_DAYS)),
            *("-subj", "/CN=cogbox-agent", "-keyout", str(place.tls_key_file)),
            *("-out", str(place.cert_file)),
        ]
        made = subprocess.run(command, capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise ChannelError(f"openssl could not make the agent certificate: {made.stderr}")
    _private(place.tls_key_file)
    return fingerprint_of(ssl.PEM_cert_to_DER_cert(place.cert_file.read_text()))


def server_context(place: AgentPlace) -> ssl.SSLContext:
    """TLS 1.3 only, with the agent's certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(place.cert_file, place.tls_key_file)
    return context


def client_context() -> ssl.SSLContext:
    """TLS 1.3 only and no CA trust: the certificate is checked by its pinned fingerprint."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_pinned(ssl_object: object, address: AgentAddress) -> None:
    """AgentAuthError unless the peer's certificate is the pinned one."""
    der = None
    if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        der = ssl_object.getpeercert(binary_form=True)
    shown = fingerprint_of(der) if der else "none"
    if shown != address.fingerprint:
        raise AgentAuthError(
            f"the agent at {address.host}:{address.port} showed certificate {shown}, "
            f"not the pinned {address.fingerprint}"
        )


def publish(place: AgentPlace, host: str, port: int, fingerprint: str) -> AgentAddress:
    """Write `agent.address` (0600, atomically, never through a link); a wildcard host is
    published as this machine's name."""
    address = AgentAddress(socket.gethostname() if host in _WILDCARDS else host, port, fingerprint)
    text = json.dumps({"host": address.host, "port": port, "fingerprint": fingerprint})
    staging = place.address_file.with_name(f".{place.address_file.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(staging, place.address_file)
    return address


def published(place: AgentPlace) -> AgentAddress:
    """The address a TCP agent published in its folder (AgentAuthError if it is not ours and
    private, ChannelError if there is none)."""
    try:
        # Never through a link, and never blocked by a FIFO planted in its place.
        fd = os.open(place.address_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise ChannelError(f"no TCP agent published {place.address_file}") from exc
    except OSError as exc:  # ELOOP: a symbolic link
        raise AgentAuthError(f"{place.address_file} is not a private file of this user") from exc
    with os.fdopen(fd) as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise AgentAuthError(f"{place.address_file} is not a private file of this user")
        text = source.read(_MAX_ADDRESS_FILE)
    try:
        value = json.loads(text)
        address = AgentAddress(str(value["host"]), int(value["port"]), str(value["fingerprint"]))
        bytes.fromhex(address.fingerprint)
    except (ValueError, KeyError, TypeError) as exc:
        raise ChannelError(f"{place.address_file} is not an agent address: {exc}") from exc
    if len(address.fingerprint) != 64:
        raise ChannelError(f"{place.address_file}: the fingerprint is not a SHA-256")
    return address


def _private(path: Path) -> None:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        raise AgentAuthError(f"the agent's TLS key {path} is readable by others: make it 0600")
