"""The examples gallery (`examples/`): each script runs as a user runs it, with
`cogbox run --image IMAGE --upload examples/shapes.py SCRIPT --short`, to its final metric; a
second run resumes from the checkpoint the first left; a CNTK model exported to ONNX in a
`cntk` session gives CNTK's outputs in onnxruntime in a `keras` session."""

import math
import re
from pathlib import Path

import pytest

from cogbox.images.store import Image
from cogbox.kernel.events import Event, Finished
from cogbox.kernel.session import Session, start_session
from tests.kernel.support import stdout_of
from tests.kernel.test_cli_run import cogbox_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FINAL = re.compile(r"^FINAL (\w+)=(\S+)$", re.MULTILINE)

# What the short mode (seconds of training) must reach: far from a full run's figures in
# examples/README.md, but out of reach of a model that did not learn.
SHORT_BOUNDS = {
    "cntk/logistic_regression": ("test_error", 0.0, 0.35),
    "cntk/feedforward": ("test_error", 0.0, 0.35),
    "cntk/lstm_sine": ("test_mse", 0.0, 0.3),
    "cntk/cnn": ("test_accuracy", 0.5, 1.0),
    "cntk/keras_cnn": ("test_accuracy", 0.5, 1.0),
    "cntk/fast_rcnn": ("mAP", 0.0, 1.0),
    "keras/cnn": ("test_accuracy", 0.5, 1.0),
}
ROUND_TRIP = {"cntk/export_onnx", "keras/onnx_roundtrip"}  # run together, below
ONNX_FILES = ("model.onnx", "model.reference.npz")


def final_metric(output: str) -> tuple[str, float]:
    found = FINAL.findall(output)
    assert len(found) == 1, output
    name, value = found[0]
    return name, float(value)


def run_short(example: str) -> None:
    image = example.split("/")[0]
    result = cogbox_run(
        "--image", image, "--upload", str(EXAMPLES / "shapes.py"), str(EXAMPLES / f"{example}.py"),
        "--short",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metric, value = final_metric(result.stdout)
    expected, low, high = SHORT_BOUNDS[example]
    assert metric == expected and math.isfinite(value) and low <= value <= high, result.stdout


@pytest.mark.parametrize("example", sorted(e for e in SHORT_BOUNDS if e.startswith("cntk/")))
def test_cntk_example_runs_to_its_metric_in_short_mode(cntk_image: Image, example: str) -> None:
    run_short(example)


@pytest.mark.parametrize("example", sorted(e for e in SHORT_BOUNDS if e.startswith("keras/")))
def test_keras_example_runs_to_its_metric_in_short_mode(keras_image: Image, example: str) -> None:
    run_short(example)


def test_every_example_has_a_bound_and_a_readme_line() -> None:
    scripts = {str(p.relative_to(EXAMPLES).with_suffix("")) for p in EXAMPLES.glob("*/*.py")}
    assert scripts == set(SHORT_BOUNDS) | ROUND_TRIP
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}.py`" in readme for name in scripts), readme


def batch(session: Session, command: str) -> list[Event]:
    events = list(session.execute_batch(None, command))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.exit_code == 0, stdout_of(events)
    return events


def upload(session: Session, *names: str) -> None:
    for name in names:
        session.upload(Path(name).name, (EXAMPLES / name).read_bytes())


def test_a_second_run_resumes_from_the_checkpoint_the_first_left(cntk_image: Image) -> None:
    with start_session(cntk_image) as session:
        upload(session, "shapes.py", "cntk/cnn.py")
        batch(session, "python cnn.py --short")
        saved = {entry.name for entry in session.list_files("results/cnn")}
        again = stdout_of(batch(session, "python cnn.py --short --resume"))
    assert {"model.cntk", "checkpoint.cntk", "loss.csv"} <= saved, saved
    assert "resumed at epoch 2" in again and "epoch  1/2" not in again, again
    final_metric(again)


def test_keras_example_saves_its_loss_curve_as_png(keras_image: Image) -> None:
    with start_session(keras_image) as session:
        upload(session, "shapes.py", "keras/cnn.py")
        batch(session, "python cnn.py --short")
        png = session.download("results/keras_cnn/loss.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), png[:16]


def test_a_cntk_model_exported_to_onnx_gives_cntks_outputs_in_onnxruntime(
    cntk_image: Image, keras_image: Image
) -> None:
    with start_session(cntk_image) as cntk:
        upload(cntk, "cntk/feedforward.py", "cntk/export_onnx.py")
        batch(cntk, "python export_onnx.py --short --out models")
        exported = {name: cntk.download(f"models/{name}") for name in ONNX_FILES}
    with start_session(keras_image) as keras:
        for name, data in exported.items():
            keras.upload(f"models/{name}", data)
        upload(keras, "keras/onnx_roundtrip.py")
        output = stdout_of(batch(keras, "python onnx_roundtrip.py models --tolerance 1e-5"))
    name, worst = final_metric(output)
    assert name == "max_abs_diff" and worst <= 1e-5, output
