"""`cogbox run SCRIPT [ARGS]...`: what to upload and the command that runs SCRIPT as a script.

Pure and light (no service or kernel stack imported here): the files are read, and their
destinations checked, before any session starts, so a missing file or an unsafe destination
is refused at once. The run itself is a batch command (`Session.execute_batch`):

    exec "$COGBOX_PYTHON" train.py --epochs 2

in /home/work. `$COGBOX_PYTHON` is set by the batch runner to the kernel's own interpreter,
which is the image manifest's `kernel.runtime_path` (python2.7 in `cntk`, python3 in
`python`), the same locally and through a service. `exec` makes the script the shell's
process, so a signal that kills it is its own exit status (128 + N).
"""

import os
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cogbox.errors import CogboxError

UPLOAD_FILES_MAX = 10_000  # a folder tree larger than this is a mistake (a venv, a dataset)


class ScriptError(CogboxError):
    """A script or an --upload that cannot be sent: missing, unreadable or unsafe."""


@dataclass(frozen=True)
class Upload:
    """One file to write in /home/work before the script runs."""

    dest: str  # relative to /home/work, "/"-separated
    data: bytes


@dataclass(frozen=True)
class ScriptRun:
    """A script's uploads and the shell command that runs it."""

    uploads: tuple[Upload, ...]
    command: str


def prepare_script(script: Path, args: tuple[str, ...], uploads: tuple[str, ...]) -> ScriptRun:
    """Read SCRIPT and each --upload (PATH, or PATH:DEST with DEST relative to /home/work).

    A file lands as its own name (or DEST); a folder keeps its tree under its own name (or
    DEST). SCRIPT lands as its own name and runs from /home/work with `args`, each quoted for
    the shell so that it reaches `sys.argv` unchanged. Raises ScriptError naming the path.
    """
    if not script.is_file():
        raise ScriptError(f"the script {str(script)!r} is not a file")
    files: dict[str, bytes] = {}
    for spec in uploads:
        source, dest = _split_spec(spec)
        for path, name in _walk(source, dest):
            files[name] = _read(path)
    name = _destination(script.name)
    files[name] = _read(script)
    return ScriptRun(
        tuple(Upload(dest, data) for dest, data in files.items()),
        'exec "$COGBOX_PYTHON" ' + shlex.join([name, *args]),
    )


def _split_spec(spec: str) -> tuple[Path, str]:
    if os.path.lexists(spec) or ":" not in spec:
        source = Path(spec)
        dest = source.resolve().name if source.name in ("", ".", "..") else source.name
    else:
        local, _, dest = spec.rpartition(":")
        source = Path(local)
    if not os.path.lexists(source):
        raise ScriptError(f"the upload {str(source)!r} does not exist")
    return source, _destination(dest)


def _destination(dest: str) -> str:
    """`dest` made canonical; refuses what would leave /home/work (the service does too)."""
    path = PurePosixPath(dest)
    if "\0" in dest or path.is_absolute():
        raise ScriptError(f"the destination {dest!r} must be relative to /home/work")
    parts = [part for part in path.parts if part != "."]
    if ".." in parts or not parts:
        raise ScriptError(f"the destination {dest!r} must stay inside /home/work (no '..')")
    return "/".join(parts)


def _walk(source: Path, dest: str) -> list[tuple[Path, str]]:
    if not source.is_dir():
        return [(source, dest)]
    found: list[tuple[Path, str]] = []
    for folder, subfolders, names in os.walk(source):
        subfolders.sort()
        relative = Path(folder).relative_to(source)
        for file_name in sorted(names):
            found.append((Path(folder, file_name), _destination(f"{dest}/{relative}/{file_name}")))
        if len(found) > UPLOAD_FILES_MAX:
            raise ScriptError(
                f"the folder {str(source)!r} holds more than {UPLOAD_FILES_MAX} files; "
                "upload a smaller one"
            )
    return found


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ScriptError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
