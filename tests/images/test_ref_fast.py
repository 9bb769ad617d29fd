"""Images cross the agent protocol as `name@sha256:<digest>` (images/ref.py): the agent starts
exactly the version the manager prepared, or refuses by name."""

import json
from pathlib import Path

import pytest

from cogbox.images.ref import find_ref, parse_ref, ref_of
from cogbox.images.store import ImageNotFound, ImageStore

OLD, NEW = "a" * 64, "b" * 64


def _store(tmp_path: Path, *digests: str) -> ImageStore:
    for digest in digests:
        folder = tmp_path / "images" / "python" / digest
        (folder / "rootfs").mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"name": "python", "digest": digest}))
    return ImageStore(tmp_path)


def test_a_reference_names_one_version_and_round_trips(tmp_path: Path) -> None:
    image = find_ref(_store(tmp_path, NEW), f"python@sha256:{NEW}")
    assert (image.digest, ref_of(image)) == (NEW, f"python@sha256:{NEW}")
    assert parse_ref("python").digest is None


def test_a_reference_to_another_version_is_refused_naming_both_digests(tmp_path: Path) -> None:
    store = _store(tmp_path, NEW)
    with pytest.raises(ImageNotFound, match=f"python is sha256:{NEW}.*not the sha256:{OLD}"):
        find_ref(store, f"python@sha256:{OLD}")


@pytest.mark.parametrize(
    "text", ["python@", "python@sha256:abc", f"@sha256:{NEW}", f"python@md5:{NEW}"]
)
def test_a_malformed_reference_is_refused_by_its_text(text: str) -> None:
    with pytest.raises(ImageNotFound, match="is not name@sha256"):
        parse_ref(text)
