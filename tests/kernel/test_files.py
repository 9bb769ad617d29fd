"""Files: upload/download/list in /home/work from the host, never following the user's links."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.kernel.errors import KernelError
from cogbox.kernel.files import FileEntry, UnsafePathError
from cogbox.kernel.session import Session, start_session
from tests.kernel.support import run, small_policy, stdout_of


@pytest.fixture(scope="module")
def session(python_image: Image) -> Iterator[Session]:
    """A session with a 64 MiB /home/work quota (a live ext4 mount while it runs)."""
    with start_session(python_image, small_policy()) as session:
        yield session


def test_uploaded_file_is_readable_by_the_code(session: Session) -> None:
    session.upload("data/input.txt", b"from the host")
    assert stdout_of(run(session, "print(open('/home/work/data/input.txt').read())")) == (
        "from the host\n"
    )


def test_file_written_by_the_code_can_be_downloaded(session: Session) -> None:
    run(session, "open('/home/work/out.bin', 'wb').write(bytes(range(256)))")
    assert session.download("out.bin") == bytes(range(256))


def test_uploaded_file_belongs_to_the_jail_user(session: Session) -> None:
    session.upload("owned.txt", b"x")
    assert stdout_of(run(session, "import os; print(os.stat('/home/work/owned.txt').st_uid)")) == (
        "1000\n"
    )


def test_list_shows_entries_with_their_kind(session: Session) -> None:
    session.upload("listed/a.txt", b"abc")
    run(session, "import os; os.symlink('/etc', '/home/work/listed/link')")
    entries = {e.name: (e.kind, e.size) for e in session.list_files("listed")}
    assert entries == {"a.txt": ("file", 3), "link": ("symlink", 4)}
    assert all(isinstance(e, FileEntry) for e in session.list_files())


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", ""])
def test_paths_that_leave_home_work_are_refused(session: Session, path: str) -> None:
    with pytest.raises(UnsafePathError):
        session.upload(path, b"x")


def test_download_of_a_planted_link_to_a_host_file_is_refused(session: Session) -> None:
    # Attack family: symlink escape (Judge0 CVE-2024-28185 style), read side.
    run(session, "import os; os.symlink('/etc/shadow', '/home/work/shadow')")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        session.download("shadow")


def test_upload_through_a_planted_directory_link_is_refused(
    session: Session, tmp_path: Path
) -> None:
    # Attack family: symlink escape, write side: a link to a host folder on the path.
    os.chmod(tmp_path, 0o777)
    run(session, f"import os; os.symlink({str(tmp_path)!r}, '/home/work/outside')")
    with pytest.raises(UnsafePathError, match="'outside' is a symbolic link"):
        session.upload("outside/pwned.txt", b"x")
    assert list(tmp_path.iterdir()) == []


def test_upload_over_a_hard_link_replaces_it_instead_of_writing_through(
    session: Session,
) -> None:
    run(
        session,
        "import os\nopen('/home/work/orig', 'w').write('keep')\n"
        "os.link('/home/work/orig', '/home/work/hard')",
    )
    session.upload("hard", b"new")
    assert (session.download("orig"), session.download("hard")) == (b"keep", b"new")


def test_upload_past_the_workdir_quota_fails_naming_it(session: Session) -> None:
    with pytest.raises(KernelError, match="quota"):
        session.upload("big.bin", b"\0" * (80 << 20))


def test_download_of_a_missing_file_says_so(session: Session) -> None:
    with pytest.raises(KernelError, match="does not exist"):
        session.download("nothing/here.txt")


def test_download_is_capped(session: Session) -> None:
    session.upload("ten.bin", b"0123456789")
    with pytest.raises(KernelError, match="more than the limit of 5"):
        session.download("ten.bin", limit=5)
