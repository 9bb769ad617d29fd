"""Figures a terminal cannot show are saved to new files, never over an existing one."""

import base64
import os
from pathlib import Path

import pytest

from cogbox.cli.figures import save_figure

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_png_is_decoded_into_a_new_file_named_by_count(tmp_path: Path) -> None:
    data = {"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"}
    first, second = save_figure(data, tmp_path), save_figure(data, tmp_path)
    assert (first, second) == (tmp_path / "cogbox-figure-1.png", tmp_path / "cogbox-figure-2.png")
    assert first.read_bytes() == PNG


def test_an_existing_file_or_link_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, tmp_path / "cogbox-figure-1.png")
    (tmp_path / "cogbox-figure-2.png").write_text("mine")
    saved = save_figure({"image/png": base64.b64encode(PNG).decode()}, tmp_path)
    assert saved == tmp_path / "cogbox-figure-3.png"
    assert (victim.read_text(), (tmp_path / "cogbox-figure-2.png").read_text()) == ("keep", "mine")


def test_svg_is_text_and_png_is_preferred(tmp_path: Path) -> None:
    svg = save_figure({"image/svg+xml": "<svg/>"}, tmp_path)
    both = save_figure(
        {"image/svg+xml": "<svg/>", "image/png": base64.b64encode(PNG).decode()}, tmp_path
    )
    assert svg is not None and svg.read_text() == "<svg/>"
    assert both is not None and both.suffix == ".png"


def test_text_only_output_is_not_a_figure_and_bad_base64_is_an_error(tmp_path: Path) -> None:
    assert save_figure({"text/plain": "42"}, tmp_path) is None
    with pytest.raises(ValueError, match="image/png output is not base64"):
        save_figure({"image/png": "not base64!"}, tmp_path)
    assert list(tmp_path.iterdir()) == []
