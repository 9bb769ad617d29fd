"""The examples gallery (`examples/cntk/`): each script runs as a user runs it, with
`cogbox run --image cntk --upload shapes.py SCRIPT --short`, to its final metric; a second run
resumes from the checkpoint the first one left in the session's work dir."""

import math
import re
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.kernel.events import Finished
from cogbox.kernel.session import start_session
from tests.kernel.support import stdout_of
from tests.kernel.test_cli_run import cogbox_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cntk"
FINAL = re.compile(r"^FINAL (\w+)=(\S+)$", re.MULTILINE)

# What the short mode (seconds of training) must reach: far from a full run's figures in
# examples/README.md, but out of reach of a model that did not learn.
SHORT_BOUNDS = {
    "logistic_regression": ("test_error", 0.0, 0.35),
    "feedforward": ("test_error", 0.0, 0.35),
    "lstm_sine": ("test_mse", 0.0, 0.6),
    "cnn": ("test_accuracy", 0.5, 1.0),
    "fast_rcnn": ("mAP", 0.0, 1.0),
}


def final_metric(output: str) -> tuple[str, float]:
    found = FINAL.findall(output)
    assert len(found) == 1, output
    name, value = found[0]
    return name, float(value)


@pytest.mark.parametrize("name", sorted(SHORT_BOUNDS))
def test_example_runs_to_its_metric_in_short_mode(cntk_image: Image, name: str) -> None:
    result = cogbox_run(
        "--image", "cntk", "--upload", str(EXAMPLES / "shapes.py"), str(EXAMPLES / f"{name}.py"),
        "--short",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metric, value = final_metric(result.stdout)
    expected, low, high = SHORT_BOUNDS[name]
    assert metric == expected and math.isfinite(value) and low <= value <= high, result.stdout


def test_every_example_has_a_bound_and_a_readme_line() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py")} - {"shapes"}
    assert scripts == set(SHORT_BOUNDS)
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert all(f"`cntk/{name}.py`" in readme for name in scripts), readme


def test_a_second_run_resumes_from_the_checkpoint_the_first_left(cntk_image: Image) -> None:
    with start_session(cntk_image) as session:
        for source in ("shapes.py", "cnn.py"):
            session.upload(source, (EXAMPLES / source).read_bytes())
        first = list(session.execute_batch(None, "python cnn.py --short"))
        saved = {entry.name for entry in session.list_files("results/cnn")}
        again = list(session.execute_batch(None, "python cnn.py --short --resume"))
    assert isinstance(first[-1], Finished) and first[-1].exit_code == 0, stdout_of(first)
    assert {"model.cntk", "checkpoint.cntk", "loss.csv"} <= saved, saved
    assert isinstance(again[-1], Finished) and again[-1].exit_code == 0, stdout_of(again)
    assert "resumed at epoch 2" in stdout_of(again) and "epoch  1/2" not in stdout_of(again)
    final_metric(stdout_of(again))
