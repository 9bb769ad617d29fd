"""Attack family: the filesystem.

The image root is mounted read-only; only /home/work (a quota filesystem copied back to the
host directory when the jail ends), /tmp and /dev/shm are writable. Covered: writing the
image, symbolic links and FIFOs that the host could be tricked into following or opening
when it copies /home/work back (Judge0's escapes were of this kind), setuid files (nosuid
mounts and no_new_privs), device nodes (no CAP_MKNOD, device cgroup), the contents of /dev,
and files left over from one session for the next.
"""

import ast
import os
import shutil
import stat
import time
from pathlib import Path

from cogbox.images.store import Image
from cogbox.jail.launcher import ExitReason
from tests.attacks.harness import assert_blocked, jail_python, stdout, text

EPERM = 1
EACCES = 13
EROFS = 30


def test_image_root_is_read_only(python_image: Image) -> None:
    result = jail_python(python_image, 'attempt("write /", lambda: open("/evil", "w"))')

    assert_blocked(result, "write /", "OSError", EROFS)
    assert "Read-only file system" in stdout(result)
    assert not (python_image.rootfs / "evil").exists()


def test_usr_is_read_only_and_the_image_unchanged(python_image: Image) -> None:
    python = python_image.rootfs / "usr/bin/python3.11"
    before = python.stat()
    code = """
attempt("overwrite python", lambda: open("/usr/bin/python3.11", "r+b").write(b"\\x00"))
attempt("create in /usr/lib", lambda: open("/usr/lib/evil.so", "wb"))
attempt("append /etc/passwd", lambda: open("/etc/passwd", "a").write("r00t::0:0::/:/bin/sh\\n"))
"""
    result = jail_python(python_image, code)

    # Existing files are root's, so ownership refuses first; a new name meets the read-only
    # mount.
    assert_blocked(result, "overwrite python", "PermissionError", EACCES)
    assert_blocked(result, "append /etc/passwd", "PermissionError", EACCES)
    assert_blocked(result, "create in /usr/lib", "OSError", EROFS)
    after = python.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert not (python_image.rootfs / "usr/lib/evil.so").exists()
    assert "r00t" not in (python_image.rootfs / "etc/passwd").read_text()


def test_symlinks_to_host_paths_are_never_followed(
    python_image: Image, workdir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("original")
    secret.chmod(0o600)
    target_dir = tmp_path / "host-dir"
    target_dir.mkdir()
    first = f"""
os.symlink({str(secret)!r}, "/home/work/link-file")
os.symlink({str(target_dir)!r}, "/home/work/link-dir")
os.symlink("/", "/home/work/link-root")
attempt("read through link", lambda: open("/home/work/link-file").read())
attempt("write through link", lambda: open("/home/work/link-file", "w").write("pwned"))
attempt("write into linked dir", lambda: open("/home/work/link-dir/planted", "w"))
"""
    result = jail_python(python_image, first, workdir=workdir)

    # Inside, the host's paths do not exist: the links dangle.
    assert_blocked(result, "read through link", "FileNotFoundError", 2)
    assert_blocked(result, "write through link", "FileNotFoundError", 2)
    assert_blocked(result, "write into linked dir", "FileNotFoundError", 2)
    # Copied back as links, not as what they point to.
    assert os.readlink(workdir / "link-file") == str(secret)
    assert (workdir / "link-root").is_symlink()

    # A second session on the same workdir swaps the links for real files and directories;
    # the host replaces its links instead of writing through them.
    second = """
for name in ("link-file", "link-dir"):
    os.unlink("/home/work/" + name)
open("/home/work/link-file", "w").write("pwned")
os.mkdir("/home/work/link-dir")
open("/home/work/link-dir/planted", "w").write("pwned")
print("SWAPPED")
"""
    result = jail_python(python_image, second, workdir=workdir)

    assert "SWAPPED" in stdout(result), text(result)
    assert secret.read_text() == "original"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.stat().st_uid == 0
    assert list(target_dir.iterdir()) == []
    assert (workdir / "link-file").read_text() == "pwned"
    assert not (workdir / "link-file").is_symlink()


def test_fifo_in_workdir_does_not_hang_the_host(python_image: Image, workdir: Path) -> None:
    code = """
os.mkfifo("/home/work/trap")
os.mkfifo("/home/work/trap.txt")
print("FIFOS MADE")
"""
    started = time.monotonic()
    result = jail_python(python_image, code, workdir=workdir)

    assert "FIFOS MADE" in stdout(result), text(result)
    assert time.monotonic() - started < 15, "copying /home/work back blocked on a FIFO"
    assert not (workdir / "trap").exists() or not stat.S_ISREG((workdir / "trap").lstat().st_mode)


def test_setuid_root_binary_gives_no_privilege(python_image: Image, workdir: Path) -> None:
    planted = workdir / "id-suid"
    shutil.copy(python_image.rootfs / "usr/bin/id", planted)
    os.chown(planted, 0, 0)
    os.chmod(planted, 0o4755)
    code = """
import subprocess
planted = os.stat("/home/work/id-suid")
print("PLANTED %o %d" % (planted.st_mode, planted.st_uid))
print("ID " + subprocess.run(["/home/work/id-suid"], capture_output=True, text=True).stdout)
print("MOUNT " + repr(subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"],
                                     capture_output=True, text=True)))
"""
    result = jail_python(python_image, code, workdir=workdir)

    out = stdout(result)
    # The jail really sees a setuid file of host root, which its user namespace does not map
    # (so it shows as the overflow id 65534, nobody): the one id no jail can ever be.
    assert "PLANTED 104755 65534" in out, text(result)
    assert "ID uid=1000" in out, text(result)
    assert "euid=0" not in out and "uid=0" not in out
    assert "returncode=0" not in out.split("MOUNT ")[1], "setuid mount worked in the jail"


def test_setuid_bit_set_in_the_jail_does_not_reach_the_host(
    python_image: Image, workdir: Path
) -> None:
    code = """
import shutil
shutil.copy("/usr/bin/id", "/home/work/own-suid")
os.chmod("/home/work/own-suid", 0o6755)
print("MODE %o" % os.stat("/home/work/own-suid").st_mode)
"""
    result = jail_python(python_image, code, workdir=workdir)

    assert "MODE 106755" in stdout(result), text(result)
    copied = (workdir / "own-suid").stat()
    assert copied.st_mode & (stat.S_ISUID | stat.S_ISGID) == 0, oct(copied.st_mode)


def test_chown_to_root_fails(python_image: Image) -> None:
    code = """
open("/home/work/mine", "w").close()
attempt("chown root", lambda: os.chown("/home/work/mine", 0, 0))
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "chown root", "PermissionError", EPERM)


def test_device_nodes_cannot_be_created(python_image: Image) -> None:
    code = """
import stat
attempt("mknod block", lambda: os.mknod("/tmp/vda", 0o600 | stat.S_IFBLK, os.makedev(253, 0)))
attempt("mknod mem", lambda: os.mknod("/home/work/mem", 0o600 | stat.S_IFCHR, os.makedev(1, 1)))
"""
    result = jail_python(python_image, code)

    assert_blocked(result, "mknod block", "PermissionError", EPERM)
    assert_blocked(result, "mknod mem", "PermissionError", EPERM)


HARMLESS_DEV = {
    "console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
    "stderr", "stdin", "stdout", "tty", "urandom", "zero",
}  # fmt: skip


def test_dev_holds_only_harmless_devices(python_image: Image) -> None:
    code = """
print("DEV %s" % sorted(os.listdir("/dev")))
attempt("open host disk", lambda: open("/dev/vda", "rb"))
attempt("open kmsg", lambda: open("/dev/kmsg", "rb"))
"""
    result = jail_python(python_image, code)

    listed = stdout(result).split("DEV ")[1].splitlines()[0]
    names = set(ast.literal_eval(listed))
    assert names <= HARMLESS_DEV, f"unexpected devices: {sorted(names - HARMLESS_DEV)}"
    assert_blocked(result, "open host disk", "FileNotFoundError", 2)
    assert_blocked(result, "open kmsg", "FileNotFoundError", 2)


def test_second_session_sees_nothing_left_by_the_first(python_image: Image, tmp_path: Path) -> None:
    first_work, second_work = tmp_path / "first", tmp_path / "second"
    first_work.mkdir()
    second_work.mkdir()
    first = """
for path in ("/tmp/leftover", "/home/work/leftover", "/dev/shm/leftover"):
    open(path, "w").write("from session one")
print("PLANTED")
"""
    second = """
for path in ("/tmp/leftover", "/home/work/leftover", "/dev/shm/leftover"):
    print("%s %s" % (path, "VISIBLE" if os.path.exists(path) else "absent"))
"""
    planted = jail_python(python_image, first, workdir=first_work)
    result = jail_python(python_image, second, workdir=second_work)

    assert "PLANTED" in stdout(planted), text(planted)
    assert "VISIBLE" not in stdout(result) and stdout(result).count("absent") == 3, text(result)
    assert result.exit.reason == ExitReason.EXITED
