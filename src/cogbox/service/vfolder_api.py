"""Backend.AI's storage-folder API (`backend.ai vfolder ...`), served by `VFolders`.

    POST   /folders                          create {name, quota, permission}
    GET    /folders                          the keypair's folders
    DELETE /folders                          delete by {id}
    GET    /folders/_/hosts                  one host, "local"
    GET    /folders/_/allowed_types          ["user"]
    GET    /folders/{name}                   information (usage included)
    DELETE /folders/{name}                   delete (409 while a session mounts it)
    POST   /folders/{name}/rename            {new_name}
    GET    /folders/{name}/files             {path}: a listing
    POST   /folders/{name}/mkdir             {path, parents, exist_ok}
    POST   /folders/{name}/rename-file       {target_path, new_name}
    POST   /folders/{name}/move-file         {src, dst}
    DELETE /folders/{name}/delete-files      {files, recursive}
    POST   /folders/{name}/request-upload    {path, size}: {token, url} for TUS
    POST   /folders/{name}/request-download  {path}: {token, url} for a GET
    PATCH|HEAD|OPTIONS /vfolder-storage/upload?token=...    TUS (token, not signature)
    GET    /vfolder-storage/download?token=...              the file (token, not signature)

What Backend.AI has and cogbox does not (group folders, unmanaged host paths, invitations,
sharing, cloning, usage modes other than "general") is refused by name, never ignored.
"""

import asyncio
import json
import stat
from typing import Any

from aiohttp import web

from cogbox.service.bodies import json_object
from cogbox.service.db import KeypairRecord, VFolderRecord
from cogbox.service.errors import bad_request, not_found
from cogbox.service.models import iso
from cogbox.service.vfolder_files import (
    list_dir,
    make_dir,
    move,
    remove,
    rename,
    split_path,
)
from cogbox.service.vfolder_transfer import DOWNLOAD_PATH, UPLOAD_PATH, Transfers
from cogbox.service.vfolders import VFolders

HOST = "local"


def routes(vfolders: VFolders, transfers: Transfers) -> web.RouteTableDef:
    table = web.RouteTableDef()

    async def folder_of(request: web.Request) -> tuple[KeypairRecord, VFolderRecord]:
        keypair = _keypair_of(request)
        return keypair, await vfolders.find(keypair, request.match_info["name"])

    @table.post("/folders")
    async def create(request: web.Request) -> web.Response:
        body = await json_object(request)
        _refuse_unsupported(body)
        folder = await vfolders.create(
            _keypair_of(request), body.get("name"), body.get("quota"), body.get("permission", "rw")
        )
        return web.json_response(await _describe(vfolders, folder), status=201)

    @table.get("/folders")
    async def list_folders(request: web.Request) -> web.Response:
        folders = await vfolders.of_keypair(_keypair_of(request))
        return web.json_response([await _describe(vfolders, f) for f in folders])

    @table.delete("/folders")
    async def delete_by_id(request: web.Request) -> web.Response:
        keypair = _keypair_of(request)
        wanted = (await json_object(request)).get("id")
        for folder in await vfolders.of_keypair(keypair):
            if folder.id == wanted:
                await vfolders.delete(keypair, folder.name)
                return web.Response(status=204)
        raise not_found(f"no folder with id {wanted!r}")

    @table.get("/folders/_/hosts")
    async def hosts(request: web.Request) -> web.Response:
        return web.json_response({"default": HOST, "allowed": [HOST]})

    @table.get("/folders/_/allowed_types")
    async def allowed_types(request: web.Request) -> web.Response:
        return web.json_response(["user"])

    @table.get("/folders/{name}")
    async def info(request: web.Request) -> web.Response:
        _, folder = await folder_of(request)
        return web.json_response(await _describe(vfolders, folder))

    @table.delete("/folders/{name}")
    async def delete(request: web.Request) -> web.Response:
        await vfolders.delete(_keypair_of(request), request.match_info["name"])
        return web.Response(status=204)

    @table.post("/folders/{name}/rename")
    async def rename_folder(request: web.Request) -> web.Response:
        body = await json_object(request)
        keypair, name = _keypair_of(request), request.match_info["name"]
        await vfolders.rename(keypair, name, body.get("new_name"))
        return web.Response(status=201)

    @table.get("/folders/{name}/files")
    async def files(request: web.Request) -> web.Response:
        _, folder = await folder_of(request)
        path = (await json_object(request)).get("path", ".")
        root = await vfolders.files_root(folder)
        entries = await asyncio.to_thread(list_dir, root, path)
        listing = [
            {
                "filename": e.name,
                "size": e.size,
                "mtime": e.mtime,
                "mode": stat.filemode(e.mode),
                "type": "DIRECTORY" if e.is_dir else "FILE",
            }
            for e in entries
        ]
        return web.json_response({"files": json.dumps(listing), "folder_path": path})

    @table.post("/folders/{name}/mkdir")
    async def mkdir(request: web.Request) -> web.Response:
        _, folder = await folder_of(request)
        body = await json_object(request)
        root = await vfolders.files_root(folder)
        await asyncio.to_thread(
            make_dir,
            root,
            body.get("path"),
            parents=bool(body.get("parents")),
            exist_ok=bool(body.get("exist_ok")),
        )
        return web.Response(status=201)

    @table.post("/folders/{name}/rename-file")
    async def rename_file(request: web.Request) -> web.Response:
        _, folder = await folder_of(request)
        body = await json_object(request)
        root = await vfolders.files_root(folder)
        await asyncio.to_thread(rename, root, body.get("target_path"), body.get("new_name"))
        return web.json_response({})

    @table.post("/folders/{name}/move-file")
    async def move_file(request: web.Request) -> web.Response:
        _, folder = await folder_of(request)
        body = await json_object(request)
        root = await vfolders.files_root(folder)
        await asyncio.to_thread(move, root, body.get("src"), body.get("dst"))
        return web.json_response({})

    @table.delete("/folders/{name}/delete-files")
    async def delete_files(request: web.Request) -> web.Response:
        _, folder = await folder_of(request)
        body = await json_object(request)
        root = await vfolders.files_root(folder)
        await asyncio.to_thread(
            remove, root, body.get("files"), recursive=bool(body.get("recursive"))
        )
        return web.json_response({})

    @table.post("/folders/{name}/request-upload")
    async def request_upload(request: web.Request) -> web.Response:
        _, folder = await folder_of(request)
        body = await json_object(request)
        path = _path(body.get("path"))
        token = await transfers.start_upload(folder, path, body.get("size"))
        return web.json_response({"token": token, "url": _url(request, UPLOAD_PATH)})

    @table.post("/folders/{name}/request-download")
    async def request_download(request: web.Request) -> web.Response:
        _, folder = await folder_of(request)
        body = await json_object(request)
        if body.get("archive"):
            raise bad_request("'archive': cogbox downloads one file at a time, not archives")
        path = _path(body.get("path"))
        split_path(path)  # 400 now for a path that leaves the folder, not at the GET
        token = transfers.start_download(folder, path)
        return web.json_response({"token": token, "url": _url(request, DOWNLOAD_PATH)})

    table.route("PATCH", UPLOAD_PATH)(transfers.patch)
    table.route("HEAD", UPLOAD_PATH)(transfers.head)
    table.route("OPTIONS", UPLOAD_PATH)(transfers.options)
    table.get(DOWNLOAD_PATH, allow_head=False)(transfers.download)
    return table


async def gql_vfolder_list(
    vfolders: VFolders, keypair: KeypairRecord, wanted: list[str], limit: int, offset: int
) -> dict[str, Any]:
    """Backend.AI's GraphQL `vfolder_list` (what `backend.ai vfolder list` asks for)."""
    folders = await vfolders.of_keypair(keypair)
    items = []
    for folder in folders:
        values = await _describe(vfolders, folder)
        values.update(
            {
                "user_id": keypair.access_key,
                "group_id": None,
                "created_at": iso(folder.created_at),
                "permission": _PERMISSION_NAMES[folder.permission],
                "ownership_type": "USER",
                "status": "READY",
            }
        )
        items.append({name: values.get(name) for name in wanted})
    return {"items": items[offset : offset + limit], "total_count": len(items)}


_PERMISSION_NAMES = {"rw": "READ_WRITE", "ro": "READ_ONLY"}


async def _describe(vfolders: VFolders, folder: VFolderRecord) -> dict[str, Any]:
    usage = await vfolders.usage(folder)
    holders = await vfolders.holders(folder)
    return {
        "id": folder.id,
        "name": folder.name,
        "host": HOST,
        "usage_mode": "general",
        "created_at": iso(folder.created_at),
        "is_owner": True,
        "permission": folder.permission,
        "user": folder.access_key,
        "group": None,
        "creator": folder.access_key,
        "user_email": None,
        "group_name": None,
        "ownership_type": "user",
        "type": "user",
        "unmanaged_path": None,
        "cloneable": False,
        "status": "mounted" if holders else "ready",
        "max_size": folder.quota_bytes,
        "quota": folder.quota_bytes,
        "cur_size": usage.used_bytes,
        "used_bytes": usage.used_bytes,
        "free_bytes": usage.free_bytes,
        "numFiles": usage.files,
        "num_files": usage.files,
        "mounted_by": holders,
    }


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """Backend.AI create options cogbox cannot honour, refused by name."""
    if body.get("host") not in (None, "", HOST):
        raise bad_request(f"'host': cogbox has one folder host, {HOST!r}")
    if body.get("unmanaged_path"):
        raise bad_request("'unmanaged_path': cogbox makes no folders over host paths")
    if body.get("group"):
        raise bad_request("'group': cogbox has no group folders; folders belong to a keypair")
    if body.get("usage_mode") not in (None, "general"):
        raise bad_request("'usage_mode': cogbox folders are all 'general'")
    if body.get("cloneable"):
        raise bad_request("'cloneable': cogbox does not clone folders")


def _path(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request("'path' must be a path inside the folder")
    return value


def _url(request: web.Request, path: str) -> str:
    return f"{request.scheme}://{request.host}{path}"


def _keypair_of(request: web.Request) -> KeypairRecord:
    keypair = request.get("keypair")
    assert isinstance(keypair, KeypairRecord), "the auth middleware sets the keypair"
    return keypair
