"""The cntk image's filter of CNTK's own C-level noise (`images/cntk/files/
cogbox_cntk_output.py`), run directly: the module is plain Python 2/3, so the host's Python
exercises the same code the image's kernel loads. (In the built image: test_cntk_noise.py.)"""

import importlib.util
import io
from types import ModuleType

from cogbox.config import REPO_IMAGES_DIR

NOISE = "Selected CPU as the process wide default device.\n"


def _module() -> ModuleType:
    path = REPO_IMAGES_DIR / "cntk" / "files" / "cogbox_cntk_output.py"
    spec = importlib.util.spec_from_file_location("cogbox_cntk_output", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _through(*writes: str) -> str:
    out = io.StringIO()
    line_filter = _module().LineFilter(out)
    for text in writes:
        line_filter.write(text)
    line_filter.close()
    return out.getvalue()


def test_the_noise_line_is_dropped_and_the_rest_kept() -> None:
    assert _through("before\n" + NOISE + "after\n") == "before\nafter\n"


def test_a_noise_line_split_across_writes_is_dropped() -> None:
    assert _through("x\nSelected CPU as the ", "process wide default device.\ny\n") == "x\ny\n"


def test_a_partial_line_that_is_not_noise_passes_at_once() -> None:
    out = io.StringIO()
    line_filter = _module().LineFilter(out)
    line_filter.write("epoch 1/3 [====      ]\r")
    assert out.getvalue() == "epoch 1/3 [====      ]\r"


def test_a_noise_prefix_that_never_completes_is_written_at_the_end_of_the_cell() -> None:
    assert _through("Selected CPU") == "Selected CPU"


def test_the_same_text_in_the_middle_of_a_line_is_kept() -> None:
    assert _through("note: ", NOISE) == "note: " + NOISE


def test_a_line_that_only_starts_like_the_noise_is_kept() -> None:
    text = "Selected CPU as the process wide default device. (mine)\n"
    assert _through(text) == text
