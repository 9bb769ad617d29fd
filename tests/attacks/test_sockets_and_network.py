"""Attack families: sockets, network egress, and channels between sandboxes.

Socket families with a history of kernel exploits or host access (AF_VSOCK reaches the
hypervisor, AF_ALG the kernel's crypto, AF_PACKET and raw sockets the wire) fail with EPERM:
seccomp admits AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK only, and the jail has no
CAP_NET_RAW. With `network: none` the jail has its own network namespace holding a loopback
only, so the host's 127.0.0.1, the host's abstract Unix sockets and a neighbouring jail's
ports are all out of reach; IPC namespaces keep System V shared memory apart too.
Every address used here is the host's own loopback.
"""

import socket
import uuid
from collections.abc import Iterator

import pytest

from cogbox.images.store import Image
from cogbox.jail.launcher import PIPE, Jail
from tests.attacks.harness import assert_blocked, jail_python, python_spec, stdout, text

EPERM = 1
ECONNREFUSED = 111


@pytest.mark.parametrize(
    ("name", "family", "kind", "protocol"),
    [
        ("AF_VSOCK", 40, socket.SOCK_STREAM, 0),
        ("AF_ALG", 38, socket.SOCK_SEQPACKET, 0),
        ("AF_PACKET", 17, socket.SOCK_RAW, 0x0300),  # htons(ETH_P_ALL)
        ("AF_INET raw", 2, socket.SOCK_RAW, 1),  # IPPROTO_ICMP; needs CAP_NET_RAW
    ],
    ids=["AF_VSOCK", "AF_ALG", "AF_PACKET", "AF_INET-raw"],
)
def test_dangerous_socket_family_fails_with_eperm(
    python_image: Image, name: str, family: int, kind: int, protocol: int
) -> None:
    code = f"""
import socket
attempt({name!r}, lambda: socket.socket({family}, {int(kind)}, {protocol}))
"""
    result = jail_python(python_image, code)

    assert_blocked(result, name, "PermissionError", EPERM)


def test_rare_socket_families_with_exploit_history_fail_with_eperm(python_image: Image) -> None:
    families = {
        "AF_KEY": 15, "AF_RDS": 21, "AF_PPPOX": 24, "AF_LLC": 26, "AF_CAN": 29,
        "AF_TIPC": 30, "AF_BLUETOOTH": 31, "AF_NFC": 39, "AF_SMC": 43, "AF_XDP": 44,
    }  # fmt: skip
    code = "import socket\n" + "".join(
        f"attempt({name!r}, lambda: socket.socket({number}, socket.SOCK_DGRAM, 0))\n"
        for name, number in families.items()
    )
    result = jail_python(python_image, code)

    for name in families:
        assert_blocked(result, name, "PermissionError", EPERM)


@pytest.fixture
def host_listener() -> Iterator[socket.socket]:
    """A TCP socket listening on the host's 127.0.0.1, on a free port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        yield listener
    finally:
        listener.close()


def _accepted_any(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


def test_tcp_egress_to_host_loopback_is_refused(
    python_image: Image, host_listener: socket.socket
) -> None:
    port = host_listener.getsockname()[1]
    code = f"""
import socket
attempt("connect host", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=3))
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "connect host", "ConnectionRefusedError", ECONNREFUSED)
    assert not _accepted_any(host_listener), "the host's listener got a connection from the jail"


def test_udp_to_host_loopback_never_arrives(python_image: Image) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)
    port = receiver.getsockname()[1]
    code = f"""
import socket
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(20):
    sender.sendto(b"exfiltrated", ("127.0.0.1", {port}))
print("SENT")
"""
    try:
        result = jail_python(python_image, code)
        assert "SENT" in stdout(result), text(result)
        with pytest.raises(TimeoutError):
            receiver.recvfrom(64)
    finally:
        receiver.close()


def test_host_abstract_unix_socket_is_unreachable(python_image: Image) -> None:
    # Abstract Unix sockets belong to the network namespace, not to the filesystem.
    name = f"\0cogbox-attack-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(1)
    listener.setblocking(False)
    code = f"""
import socket
def connect():
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect({name!r})
    return client
attempt("abstract unix", connect)
"""
    try:
        result = jail_python(python_image, code)
        assert_blocked(result, "abstract unix", "ConnectionRefusedError", ECONNREFUSED)
        assert not _accepted_any(listener)
    finally:
        listener.close()


def test_only_loopback_interface_exists_without_network(python_image: Image) -> None:
    code = """
import socket
print("INTERFACES %s" % sorted(name for _, name in socket.if_nameindex()))
"""
    result = jail_python(python_image, code)

    assert "INTERFACES ['lo']" in stdout(result), text(result)


_SERVER = """
import socket, time
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(("127.0.0.1", 47001))
server.listen(8)
server.settimeout(20)
print("LISTENING")
sys.stdout.flush()
try:
    connection, _ = server.accept()
    print("ACCEPTED")
except socket.timeout:
    print("NOBODY")
"""


def _start_jail(image: Image, code: str) -> Jail:
    jail = Jail()
    jail.start(python_spec(image, code), stdout=PIPE, stderr=PIPE)
    return jail


def test_neighbouring_jail_port_is_unreachable(python_image: Image) -> None:
    server = _start_jail(python_image, _SERVER)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"LISTENING"
        code = """
import socket
attempt("connect neighbour", lambda: socket.create_connection(("127.0.0.1", 47001), timeout=3))
"""
        result = jail_python(python_image, code)
        assert_blocked(result, "connect neighbour", "ConnectionRefusedError", ECONNREFUSED)
        assert server.poll() is None, "the listening jail ended early"
    finally:
        server.kill()
        server.cleanup()


def test_neighbouring_jail_sysv_shared_memory_is_invisible(python_image: Image) -> None:
    # shmget(key, size, IPC_CREAT|0666) in one jail; the same key in another must not exist.
    holder_code = """
import time
shm = raw_syscall(29, 0xC0B0C5, 4096, 0o1666)  # shmget(IPC_CREAT | 0666)
print("CREATED %d" % shm)
sys.stdout.flush()
time.sleep(20)
"""
    holder = _start_jail(python_image, holder_code)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith(b"CREATED"), "holder could not create shm"
        result = jail_python(
            python_image, 'attempt("shmget", lambda: raw_syscall(29, 0xC0B0C5, 4096, 0o666))'
        )
        assert_blocked(result, "shmget", "FileNotFoundError", 2)  # ENOENT: not in this IPC ns
    finally:
        holder.kill()
        holder.cleanup()
