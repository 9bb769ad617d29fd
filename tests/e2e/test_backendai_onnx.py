"""End to end, the way off CNTK through the unmodified `backend.ai-client` 23.3.12: a CNTK
model trained and exported to ONNX in a `cntk` session into a storage folder, then run by
onnxruntime in a `keras` session from the same folder, its outputs within 1e-5 of CNTK's."""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.images.store import Image
from tests.e2e.test_backendai_client import backendai  # noqa: F401 - the client fixture
from tests.e2e.test_backendai_vfolders import Bai, out
from tests.service.support import Service, running_service

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def service(
    cntk_image: Image, keras_image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("onnx"), "--pool", "cntk=0") as running:
        yield running


def test_cntk_model_exported_into_a_folder_runs_in_onnxruntime_in_keras(
    backendai: Path,  # noqa: F811
    service: Service,
    tmp_path: Path,
) -> None:
    bai = Bai(backendai, service.keypair(), tmp_path)
    for name in ("cntk/feedforward.py", "cntk/export_onnx.py", "keras/onnx_roundtrip.py"):
        shutil.copy(EXAMPLES / name, tmp_path)
    created = bai("vfolder", "create", "models", "-q", "64m")
    exported = bai(
        "run", "--rm", "-v", "models", "--exec", "python export_onnx.py --short --out models",
        "cntk", "feedforward.py", "export_onnx.py",
    )  # fmt: skip
    listed = bai.files("models")
    checked = bai(
        "run", "--rm", "-v", "models", "--exec", "python onnx_roundtrip.py models",
        "keras", "onnx_roundtrip.py",
    )  # fmt: skip
    assert 'Virtual folder "models" is created.' in created.stdout, out(created)
    assert "FINAL exported=1" in exported.stdout, out(exported)
    assert {"model.onnx", "model.reference.npz"} <= set(listed), listed
    found = re.search(r"^FINAL max_abs_diff=(\S+)$", checked.stdout, re.MULTILINE)
    assert found and float(found.group(1)) <= 1e-5, out(checked)
