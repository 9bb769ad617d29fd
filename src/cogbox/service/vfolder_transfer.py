"""Uploads and downloads of storage-folder files through short-lived, token-authorised URLs.

Backend.AI's client asks the manager (a signed call) for a transfer, gets back a URL and a
token, and then talks to the "storage proxy" at that URL with only the token: downloads with a
plain GET, uploads with the TUS 1.0 protocol (`aiotusclient`). cogbox is its own storage
proxy: the token is 256 random bits, bound to one keypair, one folder and one path, and
expires (`DOWNLOAD_TTL_S`; an upload `UPLOAD_IDLE_TTL_S` after its last chunk).

TUS: a hand-made subset of the core protocol (PATCH with Upload-Offset, HEAD, OPTIONS), not
a library. The candidates on PyPI (`aiohttp-tus`, unmaintained since 2021, keeps uploads
in its own store under names the client chooses, then hands over a path; `tuspy` is a
client) would each add a second file store with its own path handling; ours writes each
chunk straight into the folder through `vfolder_files` (no link followed, no buffering of a
whole file), refuses more bytes than the declared size, and needs no creation extension:
the upload is created by the signed `request-upload`, which also checks the folder's quota.
The client `aiotusclient` 0.1.4 sends only PATCH requests to the URL it is given.
"""

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from cogbox.kernel.errors import KernelError
from cogbox.kernel.files import NewFile
from cogbox.service.bodies import CHUNK_BYTES
from cogbox.service.db import Database, VFolderRecord
from cogbox.service.errors import ServiceError, bad_request, not_found, unauthorized
from cogbox.service.vfolder_files import new_upload, open_for_download, upload_error
from cogbox.service.vfolders import VFolders

UPLOAD_PATH = "/vfolder-storage/upload"
DOWNLOAD_PATH = "/vfolder-storage/download"
DOWNLOAD_TTL_S = 300.0
UPLOAD_IDLE_TTL_S = 900.0
MAX_OPEN_UPLOADS = 16  # per keypair: each holds a temporary file and two fds
TUS_VERSION = "1.0.0"
_TUS_HEADERS = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}


@dataclass
class _Ticket:
    access_key: str
    folder_id: str
    path: str
    expires_at: float


@dataclass
class _Upload(_Ticket):
    size: int = 0
    offset: int = 0
    file: NewFile | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def is_transfer_path(path: str) -> bool:
    """Paths authorised by their token, not by a signature."""
    return path in (UPLOAD_PATH, DOWNLOAD_PATH)


class Transfers:
    """The open upload and download tickets of this service process."""

    def __init__(self, db: Database, vfolders: VFolders) -> None:
        self.db = db
        self.vfolders = vfolders
        self._downloads: dict[str, _Ticket] = {}
        self._uploads: dict[str, _Upload] = {}

    # ------------------------------------------------------------------ tickets

    async def start_upload(self, folder: VFolderRecord, path: str, size: object) -> str:
        """A token to upload `size` bytes to `path`; 413 if the folder has no room for it."""
        self._expire()
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise bad_request("'size' must be the file's size in bytes")
        if sum(1 for u in self._uploads.values() if u.access_key == folder.access_key) >= (
            MAX_OPEN_UPLOADS
        ):
            raise ServiceError(
                429, "too-many-uploads", f"at most {MAX_OPEN_UPLOADS} uploads may be open at once"
            )
        usage = await self.vfolders.usage(folder)
        if size > usage.free_bytes:
            raise ServiceError(
                413,
                "vfolder-full",
                f"folder {folder.name!r} is full: {path!r} needs {size:,} bytes and the folder "
                f"has {usage.free_bytes:,} free of its quota of {folder.quota_bytes:,}",
            )
        root = await self.vfolders.files_root(folder)
        new = await asyncio.to_thread(new_upload, root, path)
        if size == 0:  # TUS sends no chunk at all for an empty file
            try:
                await asyncio.to_thread(new.commit)
            except KernelError as exc:
                raise upload_error(exc) from exc
            finally:
                new.close()
        token = secrets.token_urlsafe(32)
        self._uploads[token] = _Upload(
            folder.access_key,
            folder.id,
            path,
            time.time() + UPLOAD_IDLE_TTL_S,
            size=size,
            file=new if size else None,
        )
        return token

    def start_download(self, folder: VFolderRecord, path: str) -> str:
        self._expire()
        token = secrets.token_urlsafe(32)
        self._downloads[token] = _Ticket(
            folder.access_key, folder.id, path, time.time() + DOWNLOAD_TTL_S
        )
        return token

    def close(self) -> None:
        for upload in self._uploads.values():
            if upload.file is not None:
                upload.file.close()
        self._uploads.clear()

    # ------------------------------------------------------------------ the storage proxy

    async def patch(self, request: web.Request) -> web.Response:
        """A TUS chunk: the body, written at Upload-Offset (which must be where we are)."""
        token, upload = self._upload_of(request)
        if request.headers.get("Tus-Resumable") != TUS_VERSION:
            raise ServiceError(412, "tus-version", f"only TUS {TUS_VERSION} is served")
        if request.content_type != "application/offset+octet-stream":
            raise ServiceError(
                415, "tus-content-type", "a TUS chunk is 'application/offset+octet-stream'"
            )
        if upload.lock.locked():
            raise ServiceError(409, "tus-busy", "another chunk of this upload is being written")
        async with upload.lock:
            await self._folder_of(upload)
            if request.headers.get("Upload-Offset") != str(upload.offset):
                raise ServiceError(
                    409, "tus-offset", f"the upload is at offset {upload.offset}, not there"
                )
            new = upload.file
            if new is None:  # complete (or empty) already
                raise ServiceError(409, "tus-complete", "this upload is complete")
            try:
                async for chunk in request.content.iter_chunked(CHUNK_BYTES):
                    if upload.offset + len(chunk) > upload.size:
                        raise ServiceError(
                            413,
                            "tus-too-long",
                            f"the upload declared {upload.size:,} bytes and sends more",
                        )
                    await asyncio.to_thread(new.write, chunk)
                    upload.offset += len(chunk)
                if upload.offset == upload.size:
                    await asyncio.to_thread(new.commit)
            except KernelError as exc:
                self._drop(token)
                raise upload_error(exc) from exc
            except ServiceError:
                self._drop(token)
                raise
            if upload.offset == upload.size:
                self._drop(token)
            else:
                upload.expires_at = time.time() + UPLOAD_IDLE_TTL_S
        return web.Response(
            status=204, headers={**_TUS_HEADERS, "Upload-Offset": str(upload.offset)}
        )

    async def head(self, request: web.Request) -> web.Response:
        _, upload = self._upload_of(request)
        return web.Response(
            status=200,
            headers={
                **_TUS_HEADERS,
                "Upload-Offset": str(upload.offset),
                "Upload-Length": str(upload.size),
            },
        )

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204, headers={"Tus-Version": TUS_VERSION, "Tus-Resumable": TUS_VERSION}
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        self._expire()
        ticket = self._downloads.get(request.query.get("token", ""))
        if ticket is None:
            raise unauthorized("the download token is unknown or has expired; ask again")
        folder = await self._folder_of(ticket)
        root = await self.vfolders.files_root(folder)
        opened = await asyncio.to_thread(open_for_download, root, ticket.path, folder.quota_bytes)
        try:
            name = ticket.path.rstrip("/").rsplit("/", 1)[-1]
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(opened.size),
                    "Content-Disposition": f"attachment; filename*=UTF-8''{_quote(name)}",
                }
            )
            await response.prepare(request)
            left = opened.size
            while left > 0:
                chunk = await asyncio.to_thread(opened.read, min(CHUNK_BYTES, left))
                if not chunk:  # it shrank while we sent it: cut, the client retries
                    raise ConnectionResetError("file shrank while being sent")
                await response.write(chunk)
                left -= len(chunk)
            await response.write_eof()
            return response
        finally:
            opened.close()

    # ------------------------------------------------------------------ internals

    def _upload_of(self, request: web.Request) -> tuple[str, _Upload]:
        self._expire()
        token = request.query.get("token", "")
        upload = self._uploads.get(token)
        if upload is None:
            raise not_found("the upload token is unknown or has expired; ask again")
        return token, upload

    async def _folder_of(self, ticket: _Ticket) -> VFolderRecord:
        """The ticket's folder, if it and its keypair still exist (a revoked keypair's or a
        deleted folder's tokens die with them)."""
        keypair = await asyncio.to_thread(self.db.get_keypair, ticket.access_key)
        if keypair is None or not keypair.is_active:
            raise unauthorized("the keypair of this token is no longer active")
        for folder in await asyncio.to_thread(self.db.list_vfolders, ticket.access_key):
            if folder.id == ticket.folder_id:
                return folder
        raise not_found("the folder of this token no longer exists")

    def _drop(self, token: str) -> None:
        upload = self._uploads.pop(token, None)
        if upload is not None and upload.file is not None:
            upload.file.close()

    def _expire(self) -> None:
        now = time.time()
        for token in [t for t, d in self._downloads.items() if d.expires_at <= now]:
            del self._downloads[token]
        for token in [t for t, u in self._uploads.items() if u.expires_at <= now]:
            if not self._uploads[token].lock.locked():
                self._drop(token)


def _quote(name: str) -> str:
    return quote(name, safe="")
