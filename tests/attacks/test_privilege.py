"""Attack family: privilege.

Code runs as uid/gid 1000 with no supplementary groups, no capabilities in any set,
no_new_privs set (so setuid files and file capabilities grant nothing) and the seccomp
filter active, read from the kernel's own view in /proc/self/status. On the host, the
jailed process is uid 1000 too: there is no user namespace in which it could be root.
"""

import re
import time
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.launcher import DEVNULL, Jail
from tests.attacks.harness import assert_blocked, jail_python, python_spec, stdout, text

EPERM = 1


@pytest.fixture(scope="module")
def status(python_image: Image) -> dict[str, str]:
    """The jailed process's /proc/self/status, as a dict."""
    result = jail_python(python_image, 'print(open("/proc/self/status").read())')
    fields = dict(re.findall(r"^(\w+):[ \t]*(.*)$", stdout(result), re.MULTILINE))
    assert fields, text(result)
    return fields


def test_code_runs_as_uid_1000_without_groups(status: dict[str, str]) -> None:
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1000"] * 4
    assert status["Groups"].split() in ([], ["1000"])


@pytest.mark.parametrize("capability_set", ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
def test_no_capabilities(status: dict[str, str], capability_set: str) -> None:
    assert int(status[capability_set], 16) == 0


def test_no_new_privs_is_set(status: dict[str, str]) -> None:
    assert status["NoNewPrivs"] == "1"


def test_seccomp_filter_is_active(status: dict[str, str]) -> None:
    assert status["Seccomp"] == "2"  # SECCOMP_MODE_FILTER


def test_becoming_root_fails(python_image: Image) -> None:
    code = """
attempt("setuid 0", lambda: os.setuid(0))
attempt("setgid 0", lambda: os.setgid(0))
attempt("setgroups 0", lambda: os.setgroups([0]))
attempt("setresuid 0", lambda: os.setresuid(0, 0, 0))
"""
    result = jail_python(python_image, code)

    for name in ("setuid 0", "setgid 0", "setgroups 0", "setresuid 0"):
        assert_blocked(result, name, "PermissionError", EPERM)


def test_jailed_process_runs_as_its_own_host_uid_not_1000(python_image: Image) -> None:
    jail = Jail()
    jail.start(
        python_spec(python_image, "import time\ntime.sleep(20)"), stdout=DEVNULL, stderr=DEVNULL
    )
    try:
        assert jail.pid is not None
        # jail.pid is the jail's init; the user's command is its child.
        children = Path(f"/proc/{jail.pid}/task/{jail.pid}/children")
        deadline = time.monotonic() + 5
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.02)
        command_pid = int(children.read_text().split()[0])
        # Between its fork and its exec the child still bears the init's name.
        host_status = Path(f"/proc/{command_pid}/status").read_text()
        while not host_status.startswith("Name:\tpython") and time.monotonic() < deadline:
            time.sleep(0.02)
            host_status = Path(f"/proc/{command_pid}/status").read_text()
        assert host_status.startswith("Name:\tpython"), host_status
        fields = dict(re.findall(r"^(\w+):[ \t]*(.*)$", host_status, re.MULTILINE))
        # uid 1000 inside, its jail's own id of cogbox's reserved range on the host.
        assert jail.identity is not None and jail.identity.host_uid != 1000
        assert fields["Uid"].split() == [str(jail.identity.host_uid)] * 4, host_status
        assert int(fields["CapEff"], 16) == 0
    finally:
        jail.kill()
        jail.cleanup()
