"""Host identities: the reserved range, slot allocation across processes, ownership of files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cogbox.images.paths import WORKDIR
from cogbox.images.store import Image
from cogbox.jail.identity import (
    RANGE_END,
    RANGE_START,
    SLOT_SIZE,
    Identity,
    IdentityError,
    allocate,
    check_range,
    held_slots,
    reap_stale_identities,
)
from cogbox.jail.launcher import JailSpec, run_jailed
from cogbox.jail.oci import Bind, render_oci_spec
from cogbox.jail.policy import parse_policy
from cogbox.jail.workdir import give_tree, sync_tree


def test_identity_maps_the_work_user_onto_its_own_block() -> None:
    identity = Identity(3)

    assert identity.base == RANGE_START + 3 * SLOT_SIZE
    assert (identity.host_uid, identity.host_gid) == (identity.base + 1000, identity.base + 1000)
    assert identity.uid_mappings() == [
        {"containerID": 0, "hostID": identity.base, "size": SLOT_SIZE}
    ]
    assert RANGE_END < 2**31  # tools with signed 32-bit ids break above


def test_rendered_spec_has_a_user_namespace_and_keeps_uid_1000_inside() -> None:
    policy = parse_policy("{}", source="empty")
    spec = render_oci_spec(
        policy,
        rootfs=Path("/rootfs"),
        args=["true"],
        env={},
        binds=[Bind(Path("/w"), WORKDIR, readonly=False)],
        identity=Identity(5),
    )

    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert (
        spec["linux"]["uidMappings"] == spec["linux"]["gidMappings"] == Identity(5).uid_mappings()
    )
    assert spec["process"]["user"]["uid"] == 1000


def _etc(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_host_user_in_the_range_is_refused_naming_it(tmp_path: Path) -> None:
    etc = _etc(tmp_path, passwd=f"root:x:0:0::/root:/bin/sh\nintruder:x:{RANGE_START + 7}:1::/:/\n")

    with pytest.raises(IdentityError, match=r"uid 1879048199 of 'intruder' in /etc/passwd"):
        check_range(etc)


def test_a_subuid_range_overlapping_is_refused_naming_it(tmp_path: Path) -> None:
    etc = _etc(tmp_path, subgid=f"alice:100000:65536\nbob:{RANGE_START - 10}:100\n")

    with pytest.raises(IdentityError, match=r"/etc/subgid gives 'bob' ids"):
        check_range(etc)


def test_ordinary_host_tables_pass(tmp_path: Path) -> None:
    etc = _etc(
        tmp_path,
        passwd="root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        group="root:x:0:\nnogroup:x:65534:\n",
        subuid="user:100000:65536\n",
    )
    check_range(etc)  # no error


_ALLOCATE_MANY = """
import sys, time
from pathlib import Path
from cogbox.jail.identity import allocate
leases = [allocate(Path(sys.argv[1])) for _ in range(5)]
print(" ".join(str(lease.identity.slot) for lease in leases), flush=True)
sys.stdin.read()
"""


@pytest.mark.slow  # several interpreters racing for slots: ~5 s
def test_concurrent_allocation_from_several_processes_gives_distinct_slots(
    tmp_path: Path,
) -> None:
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", _ALLOCATE_MANY, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        slots = [int(s) for h in holders for s in (h.stdout.readline() if h.stdout else "").split()]
    finally:
        for holder in holders:
            holder.communicate("")

    assert len(slots) == 30 and len(set(slots)) == 30, sorted(slots)
    assert not set(slots) & set(held_slots(tmp_path)), "slots outlived their holders"


def test_released_slot_is_taken_again(tmp_path: Path) -> None:
    first = allocate(tmp_path)
    second = allocate(tmp_path)
    assert first.identity != second.identity
    first.release()
    third = allocate(tmp_path)

    assert third.identity == first.identity
    second.release()
    third.release()
    # Slots whose ids live jails use (of other data dirs) stay skipped, their files kept.
    assert not {first.identity.slot, second.identity.slot} & set(held_slots(tmp_path))


def test_reaper_leaves_held_slots_alone(tmp_path: Path) -> None:
    lease = allocate(tmp_path)

    assert lease.identity.slot not in reap_stale_identities(tmp_path)
    assert lease.identity.slot in held_slots(tmp_path)
    lease.release()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_give_tree_moves_jail_ids_only_and_follows_no_link(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    old = Identity(9)
    (home / "legacy.txt").write_text("made by a jail of uid 1000")
    os.chown(home / "legacy.txt", 1000, 1000)
    (home / "sub" / "old-slot.txt").write_text("made by an earlier session's slot")
    os.chown(home / "sub" / "old-slot.txt", old.host_uid, old.host_gid)
    os.chown(home / "sub", old.host_uid, old.host_gid)
    (home / "root.txt").write_text("the host's")
    outside = tmp_path / "outside"
    outside.write_text("not the jail's")
    os.chown(outside, 1000, 1000)
    (home / "link").symlink_to(outside)
    os.chown(home / "link", 1000, 1000, follow_symlinks=False)

    new = Identity(2)
    give_tree(home, new)

    owner = (new.host_uid, new.host_gid)
    for name in ("legacy.txt", "sub", "sub/old-slot.txt", "link"):
        st = os.lstat(home / name)
        assert (st.st_uid, st.st_gid) == owner, name
    assert os.stat(home).st_uid == new.host_uid
    assert os.stat(home / "root.txt").st_uid == 0
    assert os.stat(outside).st_uid == 1000, "give_tree followed a link"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_copy_back_gives_every_entry_the_sessions_ids(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f").write_text("x")
    os.chown(source / "d" / "f", 0, 0)  # whatever the image says
    (source / "l").symlink_to("d/f")
    target.mkdir()
    owner = Identity(4)

    sync_tree(source, target, owner=owner)

    for name in ("d", "d/f", "l"):
        st = os.lstat(target / name)
        assert (st.st_uid, st.st_gid) == (owner.host_uid, owner.host_gid), name


def test_network_host_jail_in_a_user_namespace_binds_sys_read_only_all_the_way_down() -> None:
    policy = parse_policy("network: host\n", source="host network")
    spec = render_oci_spec(
        policy,
        rootfs=Path("/rootfs"),
        args=["true"],
        env={},
        binds=[Bind(Path("/w"), WORKDIR, readonly=False)],
        identity=Identity(1),
    )
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")

    assert sys_mount["type"] == "bind" and "rro" in sys_mount["options"], sys_mount
    assert {"/sys/fs", "/sys/kernel"} <= set(spec["linux"]["maskedPaths"])


def test_network_host_jail_starts_and_its_sys_is_read_only_with_submounts_hidden(
    python_image: Image,
) -> None:
    policy = parse_policy("network: host\nlimits: {workdir_quota: unlimited}\n", source="host")
    code = (
        "import os\nprint(sorted(os.listdir('/sys/fs')), os.path.isdir('/sys/class'))\n"
        "try:\n    open('/sys/cogbox', 'w')\nexcept OSError as exc:\n    print(exc.errno)\n"
    )
    result = run_jailed(JailSpec(python_image, policy, ["python3", "-c", code]), timeout=60)

    assert result.stdout.decode() == "[] True\n30\n", result  # 30: EROFS
