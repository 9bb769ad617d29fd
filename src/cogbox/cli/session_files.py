"""`cogbox session upload|download|files|interrupt|restart`: a researcher's session commands.

    cogbox session upload train data/ cfg.yml        # data/ keeps its tree in /home/work
    cogbox session upload train model.py --to pkg    # lands as /home/work/pkg/model.py
    cogbox session download train out/model.onnx     # ./model.onnx, with its mtime
    cogbox session files train out
    cogbox session interrupt train && cogbox session restart train

Files stream through the native API (`/v1/sessions/{ref}/files/content`) with the standard
library's `http.client`, a chunk at a time both ways: no aiohttp import, no file whole in
memory. A download is written to a temporary file beside its destination and renamed into
place once whole, with the modification time the service reports (`X-Cogbox-Mtime`).
"""

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import click

from cogbox.cli.endpoint_options import endpoint_options, resolve_endpoint
from cogbox.images.paths import WORKDIR

# http.client (with ssl) is imported when a command runs: `cogbox --help` stays fast.
if TYPE_CHECKING:
    import http.client

    from cogbox.service.endpoint import Endpoint

CHUNK = 1 << 20
MTIME_HEADER = "X-Cogbox-Mtime"


def register(group: click.Group) -> None:
    for command in (upload, download, files, interrupt, restart):
        group.add_command(command)


def _endpoint(ctx: click.Context) -> "Endpoint":
    return resolve_endpoint(ctx)


def _ref(ref: str) -> str:
    return quote(ref, safe="")


@click.command()
@endpoint_options
@click.argument("ref")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "folder", default="", help="A folder in /home/work to put them in.")
@click.pass_context
def upload(ctx: click.Context, ref: str, paths: tuple[Path, ...], folder: str) -> None:
    """Upload PATHS (files or folders) into session REF's /home/work.

    A relative path keeps its folders (`sub/x.txt` lands in `sub/`), a folder its tree; an
    absolute path lands under its own name. `--to` puts everything below that folder.
    """
    endpoint = _endpoint(ctx)
    for local, remote in _uploads(paths, folder):
        size = local.stat().st_size
        query = urlencode({"path": remote}, safe="/")
        with local.open("rb") as body:
            _request(endpoint, "PUT", f"/v1/sessions/{_ref(ref)}/files/content?{query}", body, size)
        click.echo(f"uploaded {local} -> /home/work/{remote}")


def _uploads(paths: tuple[Path, ...], folder: str) -> Iterator[tuple[Path, str]]:
    """(local file, path in /home/work) for each file of `paths`, folders walked in order."""
    base = PurePosixPath(folder.strip("/")) if folder.strip("/") else PurePosixPath()
    for path in paths:
        if path.is_absolute() or ".." in path.parts:
            start, shown = path, PurePosixPath(path.resolve().name)
        else:
            start, shown = path, PurePosixPath(path.as_posix())
        if path.is_dir():
            for root, dirs, names in os.walk(start):
                dirs.sort()
                rel = Path(root).relative_to(start)
                for name in sorted(names):
                    local = Path(root) / name
                    if local.is_file() and not local.is_symlink():
                        yield local, str(base / shown / PurePosixPath(rel.as_posix()) / name)
        elif path.is_file():
            yield path, str(base / shown)
        else:
            raise click.BadParameter(f"{path} is neither a file nor a folder", param_hint="PATHS")


@click.command()
@endpoint_options
@click.argument("ref")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="The local folder to write them to (default: here).",
)
@click.pass_context
def download(ctx: click.Context, ref: str, paths: tuple[str, ...], dest: Path) -> None:
    """Download files PATHS (in /home/work) of session REF into --dest, keeping their
    modification times; each is written under its own base name."""
    endpoint = _endpoint(ctx)
    dest.mkdir(parents=True, exist_ok=True)
    for remote in paths:
        name = PurePosixPath(remote).name
        if not name or name in (".", ".."):
            raise click.BadParameter(f"{remote!r} names no file", param_hint="PATHS")
        query = urlencode({"path": _in_work(remote)}, safe="/")
        target = dest / name
        with _response(endpoint, "GET", f"/v1/sessions/{_ref(ref)}/files/content?{query}") as (
            response
        ):
            _save(response, target)
        click.echo(f"downloaded /home/work/{_in_work(remote)} -> {target}")


def _in_work(path: str) -> str:
    if path == WORKDIR or path.startswith(WORKDIR + "/"):
        path = path[len(WORKDIR) :].lstrip("/") or "."
    return path


def _save(response: "http.client.HTTPResponse", target: Path) -> None:
    """The body to `target` by a temporary file renamed into place, then its mtime."""
    import tempfile

    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    mtime = response.getheader(MTIME_HEADER)
    if mtime:
        with contextlib.suppress(ValueError, OSError):
            os.utime(target, (float(mtime), float(mtime)))


@click.command()
@endpoint_options
@click.argument("ref")
@click.argument("path", default=".")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@click.pass_context
def files(ctx: click.Context, ref: str, path: str, as_json: bool) -> None:
    """List PATH (a folder in /home/work, default its top) of session REF."""
    from datetime import datetime

    from cogbox.service.endpoint import call

    query = urlencode({"path": _in_work(path)}, safe="/")
    entries = call(_endpoint(ctx), "GET", f"/v1/sessions/{_ref(ref)}/files?{query}")["files"]
    if as_json:
        click.echo(json.dumps(entries, indent=1))
        return
    for entry in entries:
        when = datetime.fromtimestamp(entry["mtime"]).strftime("%Y-%m-%d %H:%M:%S")
        suffix = "/" if entry["kind"] == "directory" else ""
        click.echo(f"{entry['size']:>12}  {when}  {entry['name']}{suffix}")


@click.command()
@endpoint_options
@click.argument("ref")
@click.pass_context
def interrupt(ctx: click.Context, ref: str) -> None:
    """Interrupt the code running in session REF (its variables stay)."""
    from cogbox.service.endpoint import call

    call(_endpoint(ctx), "POST", f"/v1/sessions/{_ref(ref)}/interrupt")
    click.echo(f"interrupted {ref}")


@click.command()
@endpoint_options
@click.argument("ref")
@click.pass_context
def restart(ctx: click.Context, ref: str) -> None:
    """Restart session REF's kernel: variables are lost, files in /home/work stay."""
    from cogbox.service.endpoint import call

    answer = call(_endpoint(ctx), "POST", f"/v1/sessions/{_ref(ref)}/restart")
    click.echo(f"restarted {ref}: {answer.get('status', '')}")


def _request(
    endpoint: "Endpoint", method: str, path: str, body: IO[bytes] | None, size: int
) -> Any:
    """One signed call that sends `body` (`size` bytes) as it reads it; the answer's JSON."""
    with _response(endpoint, method, path, body, size) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


@contextlib.contextmanager
def _response(
    endpoint: "Endpoint",
    method: str,
    path: str,
    body: IO[bytes] | None = None,
    size: int = 0,
) -> Iterator["http.client.HTTPResponse"]:
    """A signed request's response, open to read a chunk at a time; ServiceClientError
    with the service's message if it refused or could not be reached."""
    import http.client

    from cogbox.service.endpoint import OCTETS, ServiceClientError, problem_of, refused

    parts = urlsplit(endpoint.url)
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.hostname or "", parts.port, timeout=300)
    headers = endpoint.signed_headers(method, path, OCTETS)
    if body is not None:
        headers["Content-Length"] = str(size)
    try:
        try:
            connection.request(method, parts.path.rstrip("/") + path, body=body, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceClientError(
                f"cannot reach the cogbox service at {endpoint.url}: {exc}"
            ) from exc
        if response.status >= 400:
            raise refused(response.status, problem_of(response.read(64 << 10)))
        yield response
    finally:
        connection.close()
