"""What the agent channel's fast tests share: a short /tmp folder with session `w1`'s work dir,
and a LocalAgent whose live session `s1` has that work dir (no kernel needed for files)."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.agent.local import LocalAgent
from cogbox.kernel.files import NewFile


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cga-", dir="/tmp"))  # unix socket paths are short
    (path / "sessions" / "w1" / "home").mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class OneHomeAgent(LocalAgent):
    """A LocalAgent whose live session `s1` has work dir `w1` (no kernel needed for files)."""

    async def create_file(self, session_id: str, path: str) -> NewFile:
        assert session_id == "s1"
        return NewFile(self._workdir("w1"), path)
