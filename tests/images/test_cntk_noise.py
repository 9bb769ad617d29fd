"""In the built cntk image's jailed kernel: CNTK's "Selected CPU as the process wide default
device." and Keras's "GPU is not detected" warning are the image's noise and are filtered;
everything the user's code prints, the same words included, still arrives."""

from cogbox.images.store import Image
from cogbox.kernel.events import Stderr, Stdout
from cogbox.kernel.session import start_session

CELLS = [
    "import cntk\nprint(cntk.minus([1, 2, 3], [4, 5, 6]).eval())",
    "import keras",
    "import os, sys\nprint('Selected CPU as the process wide default device.')\n"
    "sys.stderr.write('GPU is not detected, says the user\\n')\n"
    "os.write(1, b'C-level output of the user\\n')",
]


def test_cntk_and_keras_noise_is_filtered_and_user_output_kept(cntk_image: Image) -> None:
    printed: list[tuple[str, str]] = []
    with start_session(cntk_image) as session:
        for cell in CELLS:
            for event in session.execute(cell):
                if isinstance(event, Stdout | Stderr):
                    printed.append((event.kind, event.text))
    stdout = "".join(text for kind, text in printed if kind == "stdout")
    stderr = "".join(text for kind, text in printed if kind == "stderr")
    assert "Selected CPU" not in stderr and "CNTK backend warning" not in stderr, stderr
    assert "Using CNTK backend" in stderr, stderr  # keras's own line is the user's import's
    assert "GPU is not detected, says the user" in stderr, stderr
    for line in ("[-3. -3. -3.]", "Selected CPU as the process wide default device.", "C-level"):
        assert line in stdout, stdout  # the user's own print of the same words is kept
