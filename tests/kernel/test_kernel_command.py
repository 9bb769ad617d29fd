"""`kernel_command`: which IPython extensions a kernel loads, from its image's manifest."""

from pathlib import Path
from typing import Any

from cogbox.images.store import Image
from cogbox.kernel.launch import kernel_command


def _image(kernel: dict[str, Any]) -> Image:
    manifest = {
        "kernel": {"runtime_path": "/usr/bin/python2.7", **kernel},
        "python_packages": {"ipykernel": "4.10.1", "wurlitzer": "1.0.3"},
    }
    return Image("cntk", "0" * 64, Path("/nonexistent"), True, manifest)


def test_an_image_with_wurlitzer_loads_it_by_default() -> None:
    assert "--ext=wurlitzer" in kernel_command(_image({})).argv


def test_the_recipes_own_extensions_replace_the_default() -> None:
    argv = kernel_command(_image({"extensions": ["cogbox_cntk_output"]})).argv
    assert ("--ext=cogbox_cntk_output" in argv, "--ext=wurlitzer" in argv) == (True, False)
