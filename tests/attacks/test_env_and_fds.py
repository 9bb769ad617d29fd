"""Attack family: leaked environment and file descriptors.

The jail's environment is built only from the policy's preserved keys and `extra_envs`
(`jail_env`); the service's own environment never reaches it. Only fds 0-2 reach the jail:
the launcher's Popen closes the rest, and runc's init closes any it inherited above 2.
"""

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from tests.attacks.harness import attack_policy, jail_python, stdout, text


@pytest.fixture
def host_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A secret in the test process's environment, as a service's credentials would be."""
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("COGBOX_ATTACK_SECRET", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    yield secret


def test_host_secret_env_is_absent_in_the_jail(python_image: Image, host_secret: str) -> None:
    code = """
everything = repr(dict(os.environ)) + open("/proc/1/environ").read()
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        everything += open("/proc/%s/environ" % pid).read()
    except OSError:
        pass
print("ENV " + everything)
"""
    result = jail_python(python_image, code)

    assert "ENV " in stdout(result), text(result)
    assert host_secret not in stdout(result)
    assert "COGBOX_ATTACK_SECRET" not in stdout(result)
    assert "AWS_SECRET_ACCESS_KEY" not in stdout(result)


def test_environment_holds_only_the_policys_keys(python_image: Image, host_secret: str) -> None:
    policy = attack_policy(python_image)
    allowed = set(policy.preserved_env_keys) | set(policy.extra_envs)
    result = jail_python(python_image, 'print("KEYS " + " ".join(sorted(os.environ)))')

    keys = set(stdout(result).split("KEYS ")[1].split())
    assert keys <= allowed, f"keys the policy does not name: {sorted(keys - allowed)}"


def test_only_stdio_fds_are_open_in_the_jail(python_image: Image, tmp_path: Path) -> None:
    secret_file = tmp_path / "host-only"
    secret_file.write_text("host data")
    handle = os.open(secret_file, os.O_RDONLY)
    os.set_inheritable(handle, True)  # as a careless service's open files would be
    listener = socket.socket()
    listener.set_inheritable(True)
    code = f"""
open_fds = []
for fd in range(1024):
    try:
        os.fstat(fd)
        open_fds.append(fd)
    except OSError:
        pass
print("OPEN FDS %s" % open_fds)
attempt("read host fd", lambda: os.read({handle}, 100))
"""
    try:
        result = jail_python(python_image, code)
    finally:
        os.close(handle)
        listener.close()

    assert "OPEN FDS [0, 1, 2]" in stdout(result), text(result)
    assert "host data" not in stdout(result)
    assert "BLOCKED read host fd: OSError [Errno 9] Bad file descriptor" in stdout(result)
