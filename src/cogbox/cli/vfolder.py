"""`cogbox vfolder`: a keypair's storage folders on a cogbox service, from the command line.

    export COGBOX_ENDPOINT=http://127.0.0.1:8090 COGBOX_ACCESS_KEY=... COGBOX_SECRET_KEY=...
    cogbox vfolder create data --quota 2g           # --permission ro: sessions mount it read-only
    cogbox vfolder upload data train.csv --dest inputs
    cogbox vfolder ls data inputs
    cogbox run --endpoint $COGBOX_ENDPOINT ...      # or: backend.ai run -v data ...
    cogbox vfolder download data results/model.onnx -o .

The same API as `backend.ai vfolder ...` (`cogbox.service.vfolder_api`), through
`endpoint.call`; uploads and downloads stream through the service's token URLs (one TUS
PATCH per file, the service's refusal printed as it words it). Backend.AI's BACKEND_*
variables work too.
"""

import datetime
import http.client
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode, urlsplit

import click

from cogbox.cli.endpoint_options import endpoint_options, resolve_endpoint
from cogbox.errors import CogboxError
from cogbox.sizes import format_size

_CHUNK = 1 << 20


@click.group()
@endpoint_options
def vfolder() -> None:
    """Storage folders kept across sessions: create, list, move files in and out, mount."""


def _call(ctx: click.Context, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    from cogbox.service.endpoint import call

    return call(resolve_endpoint(ctx), method, path, body)


@vfolder.command("create")
@endpoint_options
@click.argument("name")
@click.option("--quota", "-q", default="0", help="Its size, e.g. 512m (default: the service's).")
@click.option("--permission", "-p", type=click.Choice(["rw", "ro"]), default="rw")
@click.pass_context
def create(ctx: click.Context, name: str, quota: str, permission: str) -> None:
    """Make folder NAME."""
    made = _call(ctx, "POST", "/folders", {"name": name, "quota": quota, "permission": permission})
    click.echo(f"folder {made['name']} ({format_size(made['max_size'])}, {made['permission']})")


@vfolder.command("list")
@endpoint_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_folders(ctx: click.Context, as_json: bool) -> None:
    """The keypair's folders: name, quota, used, permission, sessions mounting it."""
    folders = _call(ctx, "GET", "/folders")
    if as_json:
        click.echo(json.dumps(folders, indent=2))
        return
    for f in folders:
        used, quota = format_size(f["used_bytes"]), format_size(f["max_size"])
        mounted = f" mounted by {', '.join(f['mounted_by'])}" if f["mounted_by"] else ""
        click.echo(f"{f['name']}\t{used} of {quota}\t{f['permission']}{mounted}")


@vfolder.command("info")
@endpoint_options
@click.argument("name")
@click.pass_context
def info(ctx: click.Context, name: str) -> None:
    """Folder NAME's details, as JSON."""
    click.echo(json.dumps(_call(ctx, "GET", f"/folders/{name}"), indent=2))


@vfolder.command("rename")
@endpoint_options
@click.argument("name")
@click.argument("new_name")
@click.pass_context
def rename(ctx: click.Context, name: str, new_name: str) -> None:
    """Rename folder NAME to NEW_NAME."""
    _call(ctx, "POST", f"/folders/{name}/rename", {"new_name": new_name})


@vfolder.command("delete")
@endpoint_options
@click.argument("name")
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Delete folder NAME and all it holds (refused while a session mounts it)."""
    _call(ctx, "DELETE", f"/folders/{name}")


@vfolder.command("ls")
@endpoint_options
@click.argument("name")
@click.argument("path", default=".")
@click.pass_context
def ls(ctx: click.Context, name: str, path: str) -> None:
    """The entries of PATH in folder NAME (links are listed, never followed)."""
    listing = json.loads(_call(ctx, "GET", f"/folders/{name}/files", {"path": path})["files"])
    for entry in listing:
        mtime = datetime.datetime.fromtimestamp(entry["mtime"]).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{entry['mode']}  {entry['size']:>12}  {mtime}  {entry['filename']}")


@vfolder.command("mkdir")
@endpoint_options
@click.argument("name")
@click.argument("path")
@click.option("--parents", "-p", is_flag=True, help="Make missing parents; no error if it exists.")
@click.pass_context
def mkdir(ctx: click.Context, name: str, path: str, parents: bool) -> None:
    """Make directory PATH in folder NAME."""
    body = {"path": path, "parents": parents, "exist_ok": parents}
    _call(ctx, "POST", f"/folders/{name}/mkdir", body)


@vfolder.command("mv")
@endpoint_options
@click.argument("name")
@click.argument("src")
@click.argument("dst")
@click.pass_context
def mv(ctx: click.Context, name: str, src: str, dst: str) -> None:
    """Move SRC to DST in folder NAME (into DST if it is a directory)."""
    _call(ctx, "POST", f"/folders/{name}/move-file", {"src": src, "dst": dst})


@vfolder.command("rm")
@endpoint_options
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--recursive", "-r", is_flag=True, help="Remove directories and all they hold.")
@click.pass_context
def rm(ctx: click.Context, name: str, paths: tuple[str, ...], recursive: bool) -> None:
    """Remove PATHS from folder NAME."""
    body = {"files": list(paths), "recursive": recursive}
    _call(ctx, "DELETE", f"/folders/{name}/delete-files", body)


@vfolder.command("upload")
@endpoint_options
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--dest", default="", help="A directory of the folder to put them in.")
@click.pass_context
def upload(ctx: click.Context, name: str, files: tuple[str, ...], dest: str) -> None:
    """Upload FILES into folder NAME (an existing file of the same name is replaced)."""
    for local in map(Path, files):
        target = str(PurePosixPath(dest) / local.name) if dest else local.name
        size = local.stat().st_size
        body = {"path": target, "size": size}
        ticket = _call(ctx, "POST", f"/folders/{name}/request-upload", body)
        if size:
            with open(local, "rb") as source:
                _transfer("PATCH", ticket, body=source, size=size)
        click.echo(f"{local} -> {name}:{target} ({format_size(size)})")


@vfolder.command("download")
@endpoint_options
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--output", "-o", type=click.Path(file_okay=False), default=".")
@click.pass_context
def download(ctx: click.Context, name: str, paths: tuple[str, ...], output: str) -> None:
    """Download files PATHS of folder NAME into OUTPUT (never over an existing file)."""
    for path in paths:
        target = Path(output) / PurePosixPath(path).name
        ticket = _call(ctx, "POST", f"/folders/{name}/request-download", {"path": path})
        _transfer("GET", ticket, into=target)
        click.echo(f"{name}:{path} -> {target}")


def _transfer(
    method: str,
    ticket: dict[str, str],
    *,
    body: Any = None,
    size: int = 0,
    into: Path | None = None,
) -> None:
    """One request to a token URL: a whole file as one TUS PATCH, or a GET saved to `into`."""
    from cogbox.service.endpoint import problem_of, refused

    parts = urlsplit(ticket["url"])
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.hostname or "", parts.port, timeout=300)
    headers = {}
    if method == "PATCH":
        headers = {
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(size),
        }
    try:
        connection.request(
            method, f"{parts.path}?{urlencode({'token': ticket['token']})}", body, headers
        )
        response = connection.getresponse()
        if response.status >= 400:
            raise refused(response.status, problem_of(response.read(64 << 10)))
        if into is not None:
            fd = os.open(into, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as sink:
                while chunk := response.read(_CHUNK):
                    sink.write(chunk)
        else:
            response.read()
    except FileExistsError as exc:
        raise CogboxError(f"{into} exists; not overwritten") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise CogboxError(f"the transfer to {parts.netloc} failed: {exc}") from exc
    finally:
        connection.close()
