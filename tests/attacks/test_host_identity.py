"""Attack family: shared host identity (issue 8, finding 9).

Every jail used to run as host uid 1000, a real user on typical hosts, shared by all
sessions. Now each session's processes and files have host ids of their own (a user
namespace per jail, `cogbox.jail.identity`). Judged from the host: `/proc/<pid>/status` of
the jails' processes, owners of their files, and what a host process of uid 1000 (or of
another session's uid) can do to them.
"""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.jail.launcher import Jail, JailSpec
from cogbox.jail.policy import Policy, parse_policy
from cogbox.kernel.session import Session, start_session
from tests.attacks.harness import PRELUDE
from tests.kernel.support import run, stdout_of

# A plain bind of the host directory (no quota image), so the host path is the live one.
_POLICY = "limits:\n  memory: 256m\n  workdir_quota: unlimited\n  pids: 64\n"


def _policy() -> Policy:
    return parse_policy(_POLICY, source="host identity test policy")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder any host user can enter, like a typical home or data folder."""
    path = Path(tempfile.mkdtemp(prefix="cogbox-identity-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def _session(image: Image, workdir: Path) -> Session:
    workdir.mkdir()
    return start_session(image, _policy(), workdir)


@pytest.fixture
def two_sessions(python_image: Image, shared_dir: Path) -> Iterator[tuple[Session, Session]]:
    first = _session(python_image, shared_dir / "a")
    try:
        second = _session(python_image, shared_dir / "b")
        try:
            yield first, second
        finally:
            second.shutdown()
    finally:
        first.shutdown()


def _jail_pids(session: Session) -> list[int]:
    """The host pids of every process of the session's jail (its init and descendants)."""
    kernel = session._kernel  # the jail's init pid, as the host sees it
    assert kernel is not None and kernel.provisioner.pid is not None
    pids, todo = [], [kernel.provisioner.pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").iterdir():
            todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def _host_ids(pid: int) -> tuple[set[int], set[int]]:
    """(uids, gids) of a host process: real, effective, saved and filesystem ids."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split()[1:] for line in status if ":" in line}
    return {int(v) for v in fields["Uid"]}, {int(v) for v in fields["Gid"]}


def _session_uid(session: Session) -> int:
    uids = set().union(*(_host_ids(pid)[0] for pid in _jail_pids(session)))
    assert len(uids) == 1, f"the jail's processes run as several host uids: {uids}"
    assert uids == {session.host_identity.host_uid}, "the session's identity is not its uid"
    return uids.pop()


def _host_user_ids() -> set[int]:
    ids = set()
    for name in ("/etc/passwd", "/etc/group"):
        for line in Path(name).read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                ids.add(int(fields[2]))
    return ids


def _as_host_user(uid: int, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` on the host as `uid` (gid the same), without groups or capabilities."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_two_sessions_run_as_host_uids_of_their_own(two_sessions: tuple[Session, Session]) -> None:
    first, second = two_sessions
    uids = {_session_uid(first), _session_uid(second)}

    assert len(uids) == 2, f"two sessions share host uid {uids}"
    assert not uids & (_host_user_ids() | {0, 1000}), f"a session runs as a host user: {uids}"


def test_gids_are_the_sessions_own_too(two_sessions: tuple[Session, Session]) -> None:
    gids = [set().union(*(_host_ids(p)[1] for p in _jail_pids(s))) for s in two_sessions]

    assert len(gids[0]) == len(gids[1]) == 1 and gids[0] != gids[1], gids
    assert not (gids[0] | gids[1]) & (_host_user_ids() | {0, 1000}), gids


def test_inside_the_work_user_is_still_1000(two_sessions: tuple[Session, Session]) -> None:
    code = "import subprocess; print(subprocess.run(['id'], capture_output=True, text=True).stdout)"
    for session in two_sessions:
        assert (
            stdout_of(run(session, code)).strip()
            == "uid=1000(work) gid=1000(work) groups=1000(work)"
        )


def test_file_made_in_home_work_belongs_to_the_sessions_host_uid(
    two_sessions: tuple[Session, Session],
) -> None:
    first, _ = two_sessions
    run(first, "open('/home/work/made.txt', 'w').write('x')")

    owner = (first.workdir / "made.txt").stat().st_uid
    assert owner == _session_uid(first) and owner not in _host_user_ids() | {1000}, owner


def test_host_user_1000_can_neither_signal_nor_read_a_jail(
    two_sessions: tuple[Session, Session],
) -> None:
    session, _ = two_sessions
    run(
        session,
        "import os; os.write(os.open('/home/work/secret', os.O_CREAT | os.O_WRONLY, 0o600), b's')",
    )
    pid = _jail_pids(session)[-1]

    signalled = _as_host_user(1000, "kill", "-0", str(pid))
    read = _as_host_user(1000, "cat", str(session.workdir / "secret"))
    # /proc/<pid>/environ needs ptrace access (PTRACE_MODE_READ): same uid used to grant it.
    traced = _as_host_user(1000, "cat", f"/proc/{pid}/environ")

    assert signalled.returncode != 0 and "not permitted" in signalled.stderr, signalled
    assert read.returncode != 0 and "Permission denied" in read.stderr, read
    assert traced.returncode != 0 and "Permission denied" in traced.stderr, traced


def test_one_session_cannot_signal_another_sessions_processes(
    two_sessions: tuple[Session, Session],
) -> None:
    first, second = two_sessions
    victim = _jail_pids(second)[-1]

    # What first's code could do to second's kernel if it could see it: same uid, same reach.
    attack = _as_host_user(_session_uid(first), "kill", "-0", str(victim))

    assert attack.returncode != 0 and "not permitted" in attack.stderr, attack


def test_uid_map_shows_the_sessions_block_and_unshare_is_refused(
    two_sessions: tuple[Session, Session],
) -> None:
    session, _ = two_sessions
    code = PRELUDE + textwrap.dedent("""
        print("MAP " + " ".join(open("/proc/self/uid_map").read().split()))
        attempt("unshare", lambda: raw_syscall(272, 0x10000000))
    """)
    out = stdout_of(run(session, code))
    inside, host_base, size = (int(v) for v in out.split("MAP ")[1].split()[:3])

    assert (inside, host_base + 1000, size) == (0, _session_uid(session), 65536), out
    assert "BLOCKED unshare: PermissionError" in out, out


def test_slot_is_held_while_the_session_lives_and_freed_at_its_end(
    python_image: Image, shared_dir: Path
) -> None:
    from cogbox.jail.identity import held_slots

    before = set(held_slots())
    session = _session(python_image, shared_dir / "w")
    uid = _session_uid(session)
    during = set(held_slots()) - before
    session.shutdown()

    assert len(during) == 1, during
    assert not set(held_slots()) - before, "the session's slot outlived it"
    assert not _processes_with_uid(uid), "a process of the ended session still runs"


def _processes_with_uid(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if uid in _host_ids(int(entry.name))[0]:
                    found.append(int(entry.name))
            except (OSError, KeyError):
                continue
    return found


_CRASHING_HOLDER = """
import os, sys
from cogbox.jail.identity import allocate
lease = allocate()
print(lease.identity.slot, flush=True)
sys.stdin.read()  # hold it until the test kills us
"""


def test_slot_of_a_crashed_holder_is_reaped_only_once_no_process_uses_its_ids(
    python_image: Image,
) -> None:
    from cogbox.jail.identity import Identity, held_slots, reap_stale_identities

    holder = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_HOLDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    slot = int(holder.stdout.readline())
    assert slot not in reap_stale_identities(), "a live holder's slot was reaped"
    # A stale jail of the crashed holder still runs with the slot's ids...
    straggler = subprocess.Popen(
        ["setpriv", f"--reuid={Identity(slot).host_uid}", "--clear-groups", "sleep", "60"]
    )
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 5
        while not _processes_with_uid(Identity(slot).host_uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slot not in reap_stale_identities(), "reaped a slot whose ids a process uses"
        assert slot in held_slots()
    finally:
        straggler.kill()
        straggler.wait()
    # ... and once it is gone, the slot is free again.
    assert slot in reap_stale_identities()
    assert slot not in held_slots()


def test_one_jail_run_gets_a_transient_identity_of_its_own(python_image: Image) -> None:
    spec = JailSpec(python_image, _policy(), ["sleep", "30"])
    first, second = Jail(), Jail()
    try:
        first.start(spec)
        second.start(spec)
        assert first.pid is not None and second.pid is not None
        uids = {min(_host_ids(first.pid)[0]), min(_host_ids(second.pid)[0])}
    finally:
        first.cleanup()
        second.cleanup()

    assert len(uids) == 2 and not uids & (_host_user_ids() | {0, 1000}), uids
    assert not any(_processes_with_uid(uid) for uid in uids)


def test_upload_belongs_to_the_sessions_host_uid(two_sessions: tuple[Session, Session]) -> None:
    session, _ = two_sessions
    session.upload("up/loaded.txt", b"from the host")

    owners = {
        os.stat(p).st_uid for p in (session.workdir / "up", session.workdir / "up/loaded.txt")
    }
    assert owners == {_session_uid(session)} and not owners & (_host_user_ids() | {1000}), owners


def test_a_restarted_kernel_keeps_its_sessions_host_uid(
    two_sessions: tuple[Session, Session],
) -> None:
    session, _ = two_sessions
    before = _session_uid(session)
    session.restart()

    assert _session_uid(session) == before
    assert stdout_of(run(session, "print(open('/home/work/made-after.txt', 'w').write('x'))"))
    assert (session.workdir / "made-after.txt").stat().st_uid == before
