"""What the manager's file calls share: reading an open file of /home/work in chunks, and
the error type every file call raises (cogbox.kernel.files' FileError: the HTTP edge maps it)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from cogbox.kernel.errors import KernelError
from cogbox.kernel.files import FileError, OpenFile


async def read_chunks(opened: OpenFile, size: int, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    """Exactly `size` bytes of `opened`, a chunk at a time: zeros if the jailed code shrank
    the file meanwhile, cut if it grew (a tar header or Content-Length promised `size`)."""
    offset = 0
    while offset < size:
        want = min(chunk, size - offset)
        data = await asyncio.to_thread(opened.read_at, offset, want) or bytes(want)
        offset += len(data)
        yield data


@contextlib.contextmanager
def file_call() -> Iterator[None]:
    """A file call's FileErrors (kernel.files: missing, unsafe, full) go to the edge as they
    are; its other kernel errors (the agent's channel broke, it holds no such session) are
    file errors too."""
    try:
        yield
    except FileError:
        raise
    except KernelError as exc:
        raise FileError(str(exc)) from exc
