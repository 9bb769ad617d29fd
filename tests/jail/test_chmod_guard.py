"""Specification of OP_CHMOD's path rules: the decision, the rendering, the guard and the jail."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cogbox.images.store import Image
from cogbox.jail.chmod_guard import (
    NOTIF,
    NOTIF_ID_VALID,
    NOTIF_RECV,
    NOTIF_SEND,
    RESPONSE,
    ChmodGuard,
    chmod_allowed,
)
from cogbox.jail.launcher import PIPE, Jail, JailSpec, run_jailed
from cogbox.jail.oci import Bind, render_oci_spec
from cogbox.jail.policy import Policy, default_policy, load_policy, parse_policy
from cogbox.jail.seccomp import render_docker_profile, render_oci_seccomp

CNTK_GLOBS = ("/home/work/*", "/tmp/*")
# Backend.AI's escape forms (its jail tests), and a few more spellings of "outside".
ESCAPES = [
    "/home/work/../x",
    "/home/work/./../x",
    "/home/x/.",
    "/home/.",
    "/home/work/test/../../x/",
    "/home/work/../../etc/passwd",
    "/home/workshop/x",
    "/etc/passwd",
    "../x",
    "/",
]
INSIDE = [
    "/home/work",
    "/home/work/",
    "/home/work/.",
    "/home/work/x",
    "/home/work/test/../x",
    "//home/work/x",
    "/../home/work/x",
    "x",
    "./test/",
    "/tmp/x",
    "/home/work/../../tmp/x",
]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")
PY2 = "/usr/bin/python2.7"
PY3 = "/usr/bin/python3"


# ---------------------------------------------------------------------------- the decision


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_outside_the_globs_are_refused(path: str) -> None:
    assert not chmod_allowed(path, "/home/work", CNTK_GLOBS)


@pytest.mark.parametrize("path", INSIDE)
def test_the_workdir_and_paths_under_the_globs_are_allowed(path: str) -> None:
    assert chmod_allowed(path, "/home/work", CNTK_GLOBS)


def test_relative_paths_resolve_against_the_cwd() -> None:
    assert (chmod_allowed("work/x", "/home", CNTK_GLOBS), chmod_allowed("x", "/", CNTK_GLOBS)) == (
        True,
        False,
    )


def test_star_allows_every_path() -> None:
    assert chmod_allowed("/etc/passwd", "/", ("*",))


def test_kernel_structs_and_ioctl_numbers_match_linux_seccomp_h() -> None:
    def iowr(number: int, size: int, direction: int = 3) -> int:
        return (direction << 30) | (size << 16) | (ord("!") << 8) | number

    assert (NOTIF.size, RESPONSE.size) == (80, 24)
    assert (
        iowr(0, 80),
        iowr(1, 24),
        iowr(2, 8, direction=1),
    ) == (NOTIF_RECV, NOTIF_SEND, NOTIF_ID_VALID)


# ---------------------------------------------------------------------------- the rendering


def _seccomp_with_listener(policy: Policy, tmp_path: Path) -> dict[str, Any]:
    spec = render_oci_spec(
        policy,
        rootfs=tmp_path,
        args=["true"],
        env={},
        binds=[Bind(tmp_path, "/home/work", readonly=False)],
        seccomp_listener="/run/x/chmod.sock",
    )
    seccomp: dict[str, Any] = spec["linux"]["seccomp"]
    return seccomp


def _actions(profile: dict[str, Any], name: str) -> list[str]:
    return [rule["action"] for rule in profile["syscalls"] if name in rule["names"]]


def test_narrow_op_chmod_sends_chmod_calls_to_the_listener(tmp_path: Path) -> None:
    seccomp = _seccomp_with_listener(default_policy(), tmp_path)

    assert seccomp["listenerPath"] == "/run/x/chmod.sock"
    assert {name: _actions(seccomp, name) for name in ("chmod", "fchmodat", "fchmodat2")} == {
        "chmod": ["SCMP_ACT_NOTIFY"],
        "fchmodat": ["SCMP_ACT_NOTIFY"],
        "fchmodat2": ["SCMP_ACT_NOTIFY"],
    }


def test_op_chmod_star_renders_no_listener(tmp_path: Path) -> None:
    policy = parse_policy('whitelist_paths: {OP_CHMOD: ["*"]}')
    seccomp = _seccomp_with_listener(policy, tmp_path)

    assert ("listenerPath" in seccomp, _actions(seccomp, "chmod")) == (False, ["SCMP_ACT_ALLOW"])


def test_profiles_without_a_listener_leave_chmod_to_ownership() -> None:
    # Docker and Kubernetes have no listener to hand the fd to.
    profiles = [render_oci_seccomp(default_policy()), render_docker_profile(default_policy())]

    assert [("listenerPath" in p, _actions(p, "fchmodat")) for p in profiles] == [
        (False, ["SCMP_ACT_ALLOW"])
    ] * 2


def test_policy_exposes_only_narrowing_chmod_globs() -> None:
    star = parse_policy('whitelist_paths: {OP_CHMOD: ["*"]}')
    assert (default_policy().chmod_globs, star.chmod_globs) == (CNTK_GLOBS, None)


# ---------------------------------------------------------------------------- the guard

# A process that installs a notify filter for chmod/fchmodat, hands the listener fd to the
# guard the way runc does (state JSON + SCM_RIGHTS), drops its own copy, then chmods.
_FILTERED_CHILD = textwrap.dedent(
    """
    import json, os, socket, sys
    import pyseccomp
    sock_path, workdir = sys.argv[1], sys.argv[2]
    f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in ("chmod", "fchmodat"):
        f.add_rule(pyseccomp.NOTIFY, name)
    f.load()
    fd = pyseccomp._libseccomp.seccomp_notify_fd(f._filter)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        socket.send_fds(s, [json.dumps({"fds": ["seccompFd"], "pid": os.getpid()}).encode()], [fd])
    os.close(fd)
    os.chdir(workdir)
    def attempt(path):
        try:
            os.chmod(path, 0o700)
            return 0
        except OSError as exc:
            return exc.errno
    for line in sys.stdin:
        print(json.dumps({p: attempt(p) for p in line.split()}), flush=True)
    """
)


@pytest.fixture
def guarded_child(tmp_path: Path) -> Iterator[tuple[ChmodGuard, subprocess.Popen[str], Path]]:
    pytest.importorskip("pyseccomp")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "file").write_text("")
    (tmp_path / "outside").write_text("")
    guard = ChmodGuard(tmp_path, [f"{workdir}/*"])
    guard.start()
    child = subprocess.Popen(
        [sys.executable, "-c", _FILTERED_CHILD, str(guard.socket_path), str(workdir)],
        stdin=PIPE,
        stdout=PIPE,
        text=True,
    )
    try:
        yield guard, child, tmp_path
    finally:
        child.kill()
        child.wait()
        guard.stop()


def _chmods(child: subprocess.Popen[str], *paths: str) -> dict[str, int]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(" ".join(paths) + "\n")
    child.stdin.flush()
    answer: dict[str, int] = json.loads(child.stdout.readline())
    return answer


def test_guard_refuses_outside_and_lets_the_kernel_decide_inside(
    guarded_child: tuple[ChmodGuard, subprocess.Popen[str], Path],
) -> None:
    _, child, root = guarded_child

    assert _chmods(child, "file", f"{root}/work", "../outside", f"{root}/work/missing") == {
        "file": 0,
        f"{root}/work": 0,
        "../outside": 1,  # EPERM, though the file exists and root owns it
        f"{root}/work/missing": 2,  # allowed by the rules: the kernel's ENOENT
    }


def test_stopped_guard_makes_chmod_fail_with_enosys_instead_of_hanging(
    guarded_child: tuple[ChmodGuard, subprocess.Popen[str], Path],
) -> None:
    guard, child, _ = guarded_child
    assert _chmods(child, "file") == {"file": 0}

    guard.stop()

    assert _chmods(child, "file") == {"file": 38}


def test_stopped_guard_removes_its_socket(tmp_path: Path) -> None:
    guard = ChmodGuard(tmp_path, CNTK_GLOBS)
    guard.start()
    guard.stop()
    assert not guard.socket_path.exists()


def test_guard_closes_a_connection_that_hands_over_no_fd(tmp_path: Path) -> None:
    guard = ChmodGuard(tmp_path, CNTK_GLOBS)
    guard.start()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(guard.socket_path))
            s.sendall(b'{"fds": ["seccompFd"]}')
            s.settimeout(5)
            assert s.recv(1) == b""  # the guard hung up instead of waiting
    finally:
        guard.stop()


def test_guard_socket_moves_to_a_short_directory_when_the_bundle_path_is_too_long(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    guard = ChmodGuard(deep, CNTK_GLOBS)
    guard.start()
    try:
        assert len(str(guard.socket_path)) <= 107 and guard.socket_path.is_socket()
    finally:
        guard.stop()
    assert not guard.socket_path.parent.exists()


# ---------------------------------------------------------------------------- in the jail

_ESCAPE_SCRIPT = """
import os, sys
os.mkdir("/home/work/test")
open("/home/work/test/f", "w").close()
open("/tmp/t", "w").close()
def attempt(path):
    try:
        os.chmod(path, 0o700)
        return "OK"
    except OSError as exc:
        return "%s %d" % (type(exc).__name__, exc.errno)
for path in sys.argv[1:]:
    print("%s => %s" % (path, attempt(path)))
print("MODE %o" % (os.stat("/home/work/test/f").st_mode & 0o777))
"""


def _chmod_in_jail(image: Image, policy: Policy, paths: list[str]) -> dict[str, str]:
    """What `os.chmod(path, 0o700)` gave for each path ("OK" or "<exception> <errno>")."""
    python = PY2 if (image.rootfs / "usr/bin/python2.7").exists() else PY3
    result = run_jailed(JailSpec(image, policy, [python, "-c", _ESCAPE_SCRIPT, *paths]), timeout=60)
    lines = result.stdout.decode().splitlines()
    assert lines and lines[-1].startswith("MODE "), result.stderr.decode()
    answers = dict(line.split(" => ") for line in lines if " => " in line)
    answers["MODE"] = lines[-1].split()[1]  # of /home/work/test/f afterwards
    return answers


BACKENDAI_ESCAPES = ESCAPES[:6]
JAIL_INSIDE = ["/home/work", "/home/work/test/f", "test/f", "/tmp/t"]


@needs_root
@pytest.mark.slow
def test_chmod_escapes_raise_permission_error_in_the_cntk_jail(cntk_image: Image) -> None:
    answers = _chmod_in_jail(cntk_image, load_policy(cntk_image.policy_path), BACKENDAI_ESCAPES)
    # Python 2.7 raises OSError; errno 1 is what Python 3 turns into PermissionError.
    assert answers == {**dict.fromkeys(BACKENDAI_ESCAPES, "OSError 1"), "MODE": "644"}


@needs_root
@pytest.mark.slow
def test_chmod_escapes_raise_permission_error_in_the_python_jail(python_image: Image) -> None:
    answers = _chmod_in_jail(python_image, load_policy(python_image.policy_path), ESCAPES)
    assert answers == {**dict.fromkeys(ESCAPES, "PermissionError 1"), "MODE": "644"}


@needs_root
@pytest.mark.slow
def test_chmod_in_the_workdir_and_tmp_works_in_the_jail(python_image: Image) -> None:
    answers = _chmod_in_jail(python_image, load_policy(python_image.policy_path), JAIL_INSIDE)
    assert answers == {**dict.fromkeys(JAIL_INSIDE, "OK"), "MODE": "700"}


@needs_root
@pytest.mark.slow
def test_raw_fchmodat2_obeys_the_same_rules(python_image: Image) -> None:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def fchmodat2(path):
    return 0 if libc.syscall(452, -100, path, 0o700, 0) == 0 else ctypes.get_errno()
open("/home/work/f", "w").close()
print(fchmodat2(b"/home/work/f"), fchmodat2(b"/home/work/../x"))
"""
    result = run_jailed(
        JailSpec(python_image, load_policy(python_image.policy_path), [PY3, "-c", code]),
        timeout=60,
    )
    assert result.stdout.decode().split() == ["0", "1"], result.stderr.decode()


def _config_while_running(image: Image, policy: Policy) -> tuple[dict[str, Any], bool]:
    with Jail() as jail:
        jail.start(JailSpec(image, policy, [PY3, "-c", "input()"]), stdin=PIPE, stdout=PIPE)
        assert jail.bundle is not None
        config: dict[str, Any] = json.loads((jail.bundle / "config.json").read_text())
        socket_there = (jail.bundle / "chmod.sock").exists()
        jail.kill()
        jail.wait(30)
    return config, socket_there


@needs_root
@pytest.mark.slow
def test_jail_with_op_chmod_star_has_no_listener(python_image: Image) -> None:
    policy = parse_policy('whitelist_paths: {OP_CHMOD: ["*"]}')
    config, socket_there = _config_while_running(python_image, policy)
    assert ("listenerPath" in config["linux"]["seccomp"], socket_there) == (False, False)


@needs_root
@pytest.mark.slow
def test_jail_with_narrow_op_chmod_listens_in_its_bundle(python_image: Image) -> None:
    config, socket_there = _config_while_running(python_image, default_policy())
    assert config["linux"]["seccomp"]["listenerPath"].endswith("/chmod.sock") and socket_there
