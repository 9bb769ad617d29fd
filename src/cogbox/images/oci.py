"""Turn a built image's root filesystem into a real container image: export, archive, push.

One source of truth: the layer is the image store's rootfs itself, archived by GNU tar with
fixed timestamps, name order and numeric owners (so the same rootfs always gives the same
layer digest), and written into an OCI image layout by umoci; skopeo copies that layout into
an OCI or docker archive or to a registry. Nothing here writes tar or JSON by hand.

The layout is kept in the image folder (`Image.oci_dir`, tagged with the image's digest's
first 12 digits), and what was exported and pushed, with digests, in `Image.exports_path`.
"""

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from cogbox.errors import CogboxError
from cogbox.images.plan import POLICY_DEST, backend_ai_labels
from cogbox.images.recipe import KernelInfo
from cogbox.images.rootfs import BASE_ENV
from cogbox.images.store import Image

Report = Callable[[str], None]
ArchiveFormat = Literal["oci", "docker-archive"]

# Every timestamp in the image: the layer's files and the config's `created`. The epoch is
# what reproducible-builds' SOURCE_DATE_EPOCH uses when nothing better is known.
EPOCH = "1970-01-01T00:00:00Z"
# The engine makes its own /dev, /proc and /sys: the rootfs's device nodes stay out.
_EXCLUDED = ("./dev/*", "./proc/*", "./sys/*")
KEEP_RECORDS = 5  # archives and pushes remembered per image, newest last
_TOOLS = {"umoci": "umoci", "skopeo": "skopeo", "tar": "tar"}  # command -> Debian package


class ExportError(CogboxError):
    """Exporting or pushing an image failed; the message names the tool and its output."""


@dataclass(frozen=True)
class ImageConfig:
    """The OCI image config cogbox gives every exported image."""

    user: str
    working_dir: str
    env: dict[str, str]
    labels: dict[str, str]
    cmd: list[str]


@dataclass(frozen=True)
class Exported:
    """The OCI layout of an image, with its digests and sizes."""

    layout: Path
    tag: str
    manifest_digest: str
    config_digest: str
    layer_digest: str  # of the compressed layer, as a registry stores it
    layer_diff_id: str  # of the uncompressed layer tar
    layer_bytes: int  # compressed
    layer_tar_bytes: int  # uncompressed

    @property
    def uri(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def image_config(image: Image) -> ImageConfig:
    """Pure: the exported image's config, from the built image's manifest."""
    m = image.manifest
    user = m["user"]
    kernel = KernelInfo.model_validate(m["kernel"])
    labels = backend_ai_labels(m["suite"], kernel)
    labels["ai.backend.jail.policy"] = POLICY_DEST
    labels["org.opencontainers.image.title"] = image.name
    labels["org.opencontainers.image.description"] = str(m.get("description", ""))
    labels["io.cogbox.recipe-digest"] = image.digest
    return ImageConfig(
        user=f"{user['uid']}:{user['gid']}",
        working_dir=user["home"],
        env={"PATH": BASE_ENV["PATH"], "HOME": user["home"], **m.get("env", {})},
        labels=labels,
        cmd=[kernel.runtime_path],
    )


def oci_layout(image: Image, report: Report = lambda _: None, *, force: bool = False) -> Exported:
    """The image's OCI layout, made once (under the image folder) and reused after."""
    layout = image.oci_dir
    with open(image.path / ".oci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two exports of one image: the second reuses
        if not force and (done := _read_exports(image).get("oci")) and layout.is_dir():
            return Exported(**{**done, "layout": layout})
        tmp = image.path / f".oci-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            exported = write_oci_layout(image, tmp, report)
            shutil.rmtree(layout, ignore_errors=True)
            os.rename(tmp, layout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        exported = Exported(**{**asdict(exported), "layout": layout})
        _update_exports(image, oci={k: v for k, v in asdict(exported).items() if k != "layout"})
        return exported


def write_oci_layout(image: Image, layout: Path, report: Report = lambda _: None) -> Exported:
    """Write `image` as a one-layer OCI image layout at `layout` (which must not exist)."""
    if not image.ready:
        raise ExportError(f"image {image.name!r} is not built yet (`cogbox image build`)")
    _require("tar", "umoci")
    tag = image.digest[:12]
    config = image_config(image)
    layout.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.parent, prefix=".layer-") as scratch:
        layer = Path(scratch) / "layer.tar"
        report(f"archive the root filesystem ({image.rootfs})")
        _tool(
            [
                "tar",
                "-C",
                str(image.rootfs),
                "--sort=name",
                "--mtime=@0",
                "--clamp-mtime",
                "--numeric-owner",
                "--format=posix",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                *(f"--exclude={pattern}" for pattern in _EXCLUDED),
                "-cf",
                str(layer),
                ".",
            ]
        )
        tar_bytes = layer.stat().st_size
        report("write the OCI layout (umoci: compress the layer, write the config)")
        uri = f"{layout}:{tag}"
        _tool(["umoci", "init", "--layout", str(layout)])
        _tool(["umoci", "new", "--image", uri])
        _tool(
            [
                "umoci",
                "raw",
                "add-layer",
                "--image",
                uri,
                "--history.created",
                EPOCH,
                "--history.created_by",
                f"cogbox image export {image.name}",
                str(layer),
            ]
        )
    args = ["umoci", "config", "--image", uri, "--no-history", "--created", EPOCH]
    args += ["--author", "cogbox", "--os", "linux", "--architecture", "amd64"]
    args += ["--config.user", config.user, "--config.workingdir", config.working_dir]
    for key, value in config.env.items():
        args += ["--config.env", f"{key}={value}"]
    for key, value in sorted(config.labels.items()):
        args += ["--config.label", f"{key}={value}"]
    for word in config.cmd:
        args += ["--config.cmd", word]
    _tool(args)
    _tool(["umoci", "gc", "--layout", str(layout)])
    return _describe(layout, tag, tar_bytes)


def export_archive(
    image: Image, fmt: ArchiveFormat, output: Path, report: Report = lambda _: None
) -> Exported:
    """Write `image` to the archive file `output` (`oci` = oci-archive, or docker-archive)."""
    exported = oci_layout(image, report)
    _require("skopeo")
    ref = repository_name(image)
    output = output.resolve()
    output.unlink(missing_ok=True)  # skopeo refuses to overwrite an archive
    report(f"write {fmt} archive {output} (skopeo)")
    dest = f"oci-archive:{output}:{ref}" if fmt == "oci" else f"docker-archive:{output}:{ref}"
    _tool(["skopeo", "copy", "--quiet", exported.uri, dest])
    archive = {"format": fmt, "path": str(output), "bytes": output.stat().st_size}
    _update_exports(image, archive=archive)
    return exported


def push(
    image: Image, ref: str, *, tls_verify: bool = True, report: Report = lambda _: None
) -> str:
    """Push `image` to registry reference `ref` (host[:port]/name[:tag]); returns the digest
    the registry stored (the manifest's, unchanged: skopeo copies the layout's blobs as-is)."""
    exported = oci_layout(image, report)
    _require("skopeo")
    report(f"push to {ref} (skopeo)")
    with tempfile.NamedTemporaryFile("r", suffix=".digest") as digest_file:
        _tool(
            [
                "skopeo",
                "copy",
                "--quiet",
                f"--dest-tls-verify={'true' if tls_verify else 'false'}",
                "--digestfile",
                digest_file.name,
                exported.uri,
                f"docker://{ref}",
            ]
        )
        digest = digest_file.read().strip()
    _update_exports(image, push={"ref": ref, "digest": digest})
    return digest


def repository_name(image: Image) -> str:
    """The name an exported image is tagged with in archives: cogbox/<name>:<digest12>."""
    return f"cogbox/{image.name}:{image.digest[:12]}"


def exports(image: Image) -> dict[str, Any]:
    """What `exports.json` records for `image` ({} if it was never exported)."""
    return _read_exports(image)


def _describe(layout: Path, tag: str, tar_bytes: int) -> Exported:
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [m for m in index["manifests"] if m["annotations"].get(_REF_NAME) == tag]
    manifest = json.loads(_blob(layout, entry["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    (layer,) = manifest["layers"]
    return Exported(
        layout=layout,
        tag=tag,
        manifest_digest=entry["digest"],
        config_digest=manifest["config"]["digest"],
        layer_digest=layer["digest"],
        layer_diff_id=config["rootfs"]["diff_ids"][0],
        layer_bytes=layer["size"],
        layer_tar_bytes=tar_bytes,
    )


_REF_NAME = "org.opencontainers.image.ref.name"


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hexdigest).read_bytes()


def _read_exports(image: Image) -> dict[str, Any]:
    try:
        data = json.loads(image.exports_path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _update_exports(
    image: Image,
    *,
    oci: dict[str, Any] | None = None,
    archive: dict[str, Any] | None = None,
    push: dict[str, Any] | None = None,
) -> None:
    data = _read_exports(image)
    if oci is not None:
        data = {"oci": oci}  # a new layout: older archives and pushes no longer describe it
    if archive is not None:
        kept = [a for a in data.get("archives", []) if a["path"] != archive["path"]]
        data["archives"] = [*kept, archive][-KEEP_RECORDS:]
    if push is not None:
        kept = [p for p in data.get("pushes", []) if p["ref"] != push["ref"]]
        data["pushes"] = [*kept, push][-KEEP_RECORDS:]
    path = image.exports_path
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _require(*commands: str) -> None:
    for command in commands:
        if shutil.which(command) is None:
            raise ExportError(
                f"{command} is not installed: install the Debian package {_TOOLS[command]} "
                "(scripts/setup does)"
            )


def _tool(argv: Sequence[str]) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ExportError(f"{argv[0]} {argv[1]} failed (exit {proc.returncode}):\n{output}")
    return proc.stdout
