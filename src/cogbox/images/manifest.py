"""An image's `manifest.json` as a typed model: what its build recorded, parsed once.

The builder writes it (images/builder.py); the kernel layer and the API surfaces read it
through `Image.info`, never through `.get()` chains. Fields older builds did not record get
the defaults those readers used to assume; a field of the wrong type is an
`ImageManifestError` naming the file and the field.
"""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from cogbox.errors import CogboxError


class ImageManifestError(CogboxError):
    """A manifest.json that does not say what cogbox's builder writes; names the field."""


class _Read(BaseModel):
    # Frozen; fields no reader needs (suite, user, debian_packages, ...) are kept as written.
    model_config = ConfigDict(frozen=True, extra="allow")


class KernelManifest(_Read):
    """The recipe's `kernel:` section, as built (see recipe.KernelInfo)."""

    runtime_type: str = "python"
    runtime_path: str = "/usr/bin/python3"
    preload: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()


class ImageManifest(_Read):
    """What a built image's manifest.json records."""

    description: str = ""
    env: dict[str, str] = {}
    kernel: KernelManifest = KernelManifest()
    python_packages: dict[str, str] = {}
    size_bytes: int = 0
    built_at: str | None = None
    build_seconds: float | None = None


def parse_manifest(raw: object, source: Path | str) -> ImageManifest:
    """The typed manifest of `raw` (the parsed JSON); ImageManifestError naming the field."""
    try:
        return ImageManifest.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(the document)"
        raise ImageManifestError(f"{source}: {field}: {error['msg']}") from exc
