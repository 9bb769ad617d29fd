"""Rich output a terminal cannot show (a plot, an image) saved to a file beside the user.

Each figure gets a new name, `cogbox-figure-N.EXT` in the current folder: created with
O_EXCL, so an existing file is never overwritten.
"""

import base64
import binascii
import itertools
import os
from pathlib import Path

# In order of preference: one file per display, in the best type it offers.
_TYPES = {
    "image/png": "png",
    "image/svg+xml": "svg",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "application/pdf": "pdf",
}
_TEXT_TYPES = {"image/svg+xml"}  # the rest arrive base64-encoded, as Jupyter sends them


def save_figure(data: dict[str, str], folder: Path = Path(".")) -> Path | None:
    """Write the best figure type in `data` to a new file in `folder`; None if it holds none.

    Raises ValueError when the content is not valid base64, OSError when it cannot be written.
    """
    mime = next((m for m in _TYPES if m in data), None)
    if mime is None:
        return None
    try:
        content = data[mime].encode() if mime in _TEXT_TYPES else base64.b64decode(data[mime])
    except binascii.Error as exc:
        raise ValueError(f"{mime} output is not base64: {exc}") from exc
    for n in itertools.count(1):
        path = folder / f"cogbox-figure-{n}.{_TYPES[mime]}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        return path
    raise AssertionError("unreachable")
