"""The typed image manifest: defaults for what older builds left out, errors naming the field."""

from pathlib import Path

import pytest

from cogbox.images.manifest import ImageManifestError, parse_manifest
from cogbox.images.store import Image


def test_a_manifest_without_a_kernel_section_gets_the_readers_defaults() -> None:
    kernel = parse_manifest({"name": "old"}, "old/manifest.json").kernel
    assert (kernel.runtime_path, kernel.preload, kernel.extensions) == ("/usr/bin/python3", (), ())


def test_a_field_of_the_wrong_type_is_named_with_its_file() -> None:
    with pytest.raises(ImageManifestError, match=r"^x/manifest.json: kernel\.preload: "):
        parse_manifest({"kernel": {"preload": "numpy"}}, "x/manifest.json")


def test_fields_no_reader_needs_are_kept_as_written() -> None:
    packages = {"bash": "5.2"}
    manifest = parse_manifest({"debian_packages": packages}, "m.json")
    assert manifest.model_extra == {"debian_packages": packages}


def test_an_image_reads_its_manifest_through_the_model(tmp_path: Path) -> None:
    raw = {"env": {"LANG": "C.UTF-8"}, "size_bytes": 7, "kernel": {"preload": ["cntk"]}}
    image = Image("cntk", "d" * 64, tmp_path, True, raw)
    assert (image.env, image.size_bytes, image.info.kernel.preload) == (
        {"LANG": "C.UTF-8"},
        7,
        ("cntk",),
    )
