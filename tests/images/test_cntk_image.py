"""The seed's acceptance snippets, run in the built `cntk` root filesystem (no jail yet)."""

import subprocess

from cogbox.images.rootfs import run_in_rootfs
from cogbox.images.store import Image
from tests.seed import CNTK_MINUS, CNTK_SQUARED_ERROR, HELLO_WORLD, KERAS_BACKEND

KERAS_EPOCH = """
import numpy as np
from keras.models import Sequential
from keras.layers import Dense
np.random.seed(0)
x = np.random.rand(256, 8).astype("float32")
y = (x.sum(axis=1) > 4).astype("float32")
model = Sequential([Dense(16, activation="relu", input_dim=8), Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
history = model.fit(x, y, epochs=1, batch_size=32, verbose=0)
print("epochs=%d loss=%.4f" % (len(history.history["loss"]), history.history["loss"][0]))
"""

CNTK_TRAINER = """
import numpy as np
import cntk as C
np.random.seed(0)
features = C.input_variable(4)
labels = C.input_variable(2)
model = C.layers.Dense(2)(features)
loss = C.cross_entropy_with_softmax(model, labels)
learner = C.sgd(model.parameters, C.learning_parameter_schedule(0.1))
trainer = C.Trainer(model, (loss, C.classification_error(model, labels)), [learner])
losses = []
for _ in range(20):
    x = np.random.rand(32, 4).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[(x[:, 0] > 0.5).astype(int)]
    trainer.train_minibatch({features: x, labels: y})
    losses.append(trainer.previous_minibatch_loss_average)
print("minibatches=%d first=%.3f last=%.3f" % (len(losses), losses[0], losses[-1]))
"""


def _python(image: Image, code: str) -> subprocess.CompletedProcess[str]:
    return run_in_rootfs(
        image.rootfs,
        ["python", "-c", code],
        image.env,
        cwd="/home/work",
        timeout=300,
        readonly=True,  # the shared image must stay as built (its exports depend on it)
    )


def test_seed_hello_world(cntk_image: Image) -> None:
    assert _python(cntk_image, HELLO_WORLD).stdout == "hello world\n"


def test_python_is_python_2_7(cntk_image: Image) -> None:
    proc = _python(cntk_image, "import sys; print(sys.version_info[:2])")
    assert proc.stdout.strip() == "(2, 7)"


def test_seed_cntk_squared_error_prints_29(cntk_image: Image) -> None:
    proc = _python(cntk_image, CNTK_SQUARED_ERROR)
    assert proc.stdout.splitlines()[-1] == "[ 29.]", proc.stderr


def test_seed_keras_uses_cntk_backend(cntk_image: Image) -> None:
    proc = _python(cntk_image, KERAS_BACKEND)
    assert proc.stdout == "keras\n"
    assert "Using CNTK backend" in proc.stderr


def test_cntk_minus(cntk_image: Image) -> None:
    proc = _python(cntk_image, CNTK_MINUS)
    assert proc.stdout.splitlines()[-1] == "[-3. -3. -3.]", proc.stderr


def test_keras_dense_model_trains_an_epoch(cntk_image: Image) -> None:
    proc = _python(cntk_image, KERAS_EPOCH)
    assert proc.stdout.startswith("epochs=1 loss="), proc.stderr


def test_cntk_trainer_runs_minibatches(cntk_image: Image) -> None:
    proc = _python(cntk_image, CNTK_TRAINER)
    assert proc.stdout.startswith("minibatches=20 "), proc.stderr


def test_kernel_runtime_packages_import(cntk_image: Image) -> None:
    proc = _python(
        cntk_image,
        "import ipykernel, zmq, wurlitzer, scipy, h5py\n"
        "print('%s %s' % (ipykernel.__version__, zmq.__version__))",
    )
    assert proc.stdout.strip() == "4.10.1 19.0.2", proc.stderr


def test_work_user_owns_home(cntk_image: Image) -> None:
    home = cntk_image.rootfs / "home" / "work"
    assert (home.stat().st_uid, home.stat().st_gid) == (1000, 1000)


def test_cntk_image_is_at_most_700_mb(cntk_image: Image) -> None:
    assert cntk_image.size_bytes <= 700 * 1000 * 1000


def test_no_docs_or_caches_left(cntk_image: Image) -> None:
    root = cntk_image.rootfs
    assert list((root / "usr/share/doc").iterdir()) == []
    assert list((root / "usr/share/man").iterdir()) == []
    assert not (root / "tmp/cogbox-wheels").exists()
    assert list((root / "var/lib/apt/lists").glob("*Packages*")) == []
    assert not (root / "usr/include").exists()
    assert list((root / "usr/lib").rglob("*.a")) == []
    assert list((root / "usr/local/lib").rglob("*.a")) == []
    assert list((root / "usr/local/lib/python2.7/dist-packages").rglob("tests")) == []


def test_python_image_runs_python_3_11_with_numpy(python_image: Image) -> None:
    proc = _python(python_image, "import sys, numpy; print(sys.version_info[:2], numpy.__name__)")
    assert proc.stdout.strip() == "(3, 11) numpy", proc.stderr
