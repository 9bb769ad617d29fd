"""An image as the agent protocol names it: `name@sha256:<digest>`, one exact version.

The manager sends the reference the agent's `prepare_image` answered; the agent starts that
version or refuses by name (a rebuild in between made another one), so a session never runs
an image version other than the one it was prepared with. A bare name means the newest
ready version (the command line's form).
"""

import re
from dataclasses import dataclass

from cogbox.images.store import Image, ImageNotFound, ImageStore

_DIGEST = re.compile(r"[0-9a-f]{64}")
_PREFIX = "sha256:"


@dataclass(frozen=True)
class ImageRef:
    name: str
    digest: str | None  # hex, without "sha256:"; None: the newest ready version

    def __str__(self) -> str:
        return self.name if self.digest is None else f"{self.name}@{_PREFIX}{self.digest}"


def ref_of(image: Image) -> str:
    return str(ImageRef(image.name, image.digest))


def parse_ref(text: str) -> ImageRef:
    """`name` or `name@sha256:<64 hex>`; ImageNotFound naming the text otherwise."""
    name, at, digest = text.partition("@")
    if not at:
        return ImageRef(name, None)
    hexdigest = digest.removeprefix(_PREFIX)
    if not name or not digest.startswith(_PREFIX) or not _DIGEST.fullmatch(hexdigest):
        raise ImageNotFound(f"image reference {text!r} is not name@sha256:<64 hex digits>")
    return ImageRef(name, hexdigest)


def find_ref(store: ImageStore, text: str) -> Image:
    """The ready image `text` names; ImageNotFound, naming both digests, for a mismatch."""
    ref = parse_ref(text)
    found = store.find(ref.name, ref.digest)
    if found is not None:
        return found
    if ref.digest is not None and (other := store.find(ref.name)) is not None:
        raise ImageNotFound(
            f"image {ref.name} is {_PREFIX}{other.digest} on this agent, not the "
            f"{_PREFIX}{ref.digest} asked for (rebuilt meanwhile?): prepare it again"
        )
    return store.get(ref.name)  # ImageNotFound, naming the image
