"""Kernelspecs: Jupyter reaches jailed kernels through the proxy, conformant to the protocol.

`jupyter_kernel_test` checks every message type against the protocol's schemas through the
`cogbox-python` (ipykernel 7, Python 3.11) and `cogbox-cntk` (ipykernel 4.10, Python 2.7)
kernelspecs; nbclient then runs a notebook that trains a CNTK model.
"""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jupyter_kernel_test
import nbformat
import pytest
from click.testing import CliRunner
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from nbclient import NotebookClient

from cogbox.cli.kernelspec import kernelspec
from cogbox.images.store import Image

_PREFIX = Path(f"/tmp/cogbox-kernelspec-tests-{os.getpid()}")


def install_kernelspecs() -> Path:
    """Install the kernelspecs under a private prefix and point Jupyter at it."""
    result = CliRunner().invoke(kernelspec, ["install", "--prefix", str(_PREFIX)])
    assert result.exit_code == 0, result.output
    os.environ["JUPYTER_PATH"] = str(_PREFIX / "share/jupyter")
    return _PREFIX / "share/jupyter/kernels"


def test_install_writes_both_kernelspecs_running_the_proxy() -> None:
    kernels = install_kernelspecs()
    spec = json.loads((kernels / "cogbox-cntk/kernel.json").read_text())
    assert sorted(p.name for p in kernels.iterdir()) == [
        "cogbox-cntk", "cogbox-keras", "cogbox-python"
    ]  # fmt: skip
    assert spec["argv"][1:] == [
        "-m", "cogbox.kernel.proxy", "--image", "cntk", "-f", "{connection_file}"
    ]  # fmt: skip


@pytest.mark.slow  # the protocol suite on a local ipykernel: ~15 s of kernel round trips
class _Conformance(jupyter_kernel_test.KernelTests):
    """Samples that hold for both images (Python 2.7 and 3)."""

    language_name = "python"
    file_extension = ".py"
    code_hello_world = 'print("hello, world")'
    code_stderr = "import sys; sys.stderr.write('test\\n')"
    completion_samples: ClassVar[list[dict[str, Any]]] = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples: ClassVar[list[str]] = ["1", "print('hello, world')"]
    incomplete_code_samples: ClassVar[list[str]] = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples: ClassVar[list[str]] = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result: ClassVar[list[dict[str, str]]] = [{"code": "1+2+3", "result": "6"}]
    code_display_data: ClassVar[list[dict[str, str]]] = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
            "mime": "text/html",
        }
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    @classmethod
    def setUpClass(cls) -> None:
        install_kernelspecs()
        super().setUpClass()


@pytest.mark.usefixtures("python_image")
class TestCogboxPythonKernelspec(_Conformance):
    kernel_name = "cogbox-python"


@pytest.mark.usefixtures("cntk_image")
class TestCogboxCntkKernelspec(_Conformance):
    kernel_name = "cogbox-cntk"


# ---------------------------------------------------------------------------- the proxy


@pytest.fixture(scope="module")
def jupyter_kernel(python_image: Image) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    install_kernelspecs()
    manager, client = start_new_kernel(kernel_name="cogbox-python", startup_timeout=60)
    yield manager, client
    client.stop_channels()
    manager.shutdown_kernel()  # graceful: the proxy removes its jail


def test_interrupt_from_jupyter_stops_the_running_cell(
    jupyter_kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    manager, client = jupyter_kernel
    # stop_on_error=False: the KeyboardInterrupt must not make the kernel abort the next
    # test's request (ipykernel aborts what arrives while it clears its queue after an error).
    msg_id = client.execute("import time\nwhile True: time.sleep(0.05)", stop_on_error=False)
    time.sleep(1)
    manager.interrupt_kernel()  # SIGINT to the proxy's process group
    reply = client.get_shell_msg(timeout=10)
    while reply["parent_header"].get("msg_id") != msg_id:  # a late reply to an earlier request
        reply = client.get_shell_msg(timeout=10)
    assert (reply["content"]["status"], reply["content"]["ename"]) == ("error", "KeyboardInterrupt")


def test_input_request_reaches_jupyter_through_the_proxy(
    jupyter_kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    _, client = jupyter_kernel
    outputs: list[str] = []
    reply = client.execute_interactive(
        "print('hi ' + input('name? '))",
        allow_stdin=True,
        stdin_hook=lambda msg: client.input("jupyter"),
        output_hook=lambda msg: outputs.append(msg["content"].get("text", "")),
        timeout=10,
    )
    assert (reply["content"]["status"], "".join(outputs)) == ("ok", "hi jupyter\n")


def test_proxy_exits_when_the_jailed_kernel_dies(python_image: Image) -> None:
    install_kernelspecs()
    manager, client = start_new_kernel(kernel_name="cogbox-python", startup_timeout=60)
    try:
        client.execute("import os; os._exit(1)")
        deadline = time.monotonic() + 10
        while manager.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not manager.is_alive()
    finally:
        client.stop_channels()
        manager.shutdown_kernel()  # graceful: the proxy removes its jail


# ---------------------------------------------------------------------------- nbclient

CNTK_TRAINING_CELL = """\
import numpy as np
import cntk as C
np.random.seed(0)
X = np.random.randn(256, 2).astype(np.float32)
Y = (X.dot(np.array([[2.0], [-1.0]])) + 0.5).astype(np.float32)
x = C.input_variable(2)
y = C.input_variable(1)
z = C.layers.Dense(1)(x)
loss = C.squared_error(z, y)
learner = C.sgd(z.parameters, C.learning_parameter_schedule(0.02))
trainer = C.Trainer(z, (loss, loss), [learner])
losses = []
for epoch in range(100):
    for i in range(0, 256, 32):
        trainer.train_minibatch({x: X[i:i + 32], y: Y[i:i + 32]})
    losses.append(trainer.previous_minibatch_loss_average)
print("loss %.4f -> %.4f" % (losses[0], losses[-1]))
"""


def test_nbclient_trains_a_cntk_model_through_the_cntk_kernelspec(cntk_image: Image) -> None:
    install_kernelspecs()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(CNTK_TRAINING_CELL),
        nbformat.v4.new_code_cell("losses[-1] < 0.01 < losses[0]"),
    ]
    NotebookClient(notebook, kernel_name="cogbox-cntk", timeout=120).execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[0].outputs)
    assert "loss " in printed and " -> " in printed
    assert notebook.cells[1].outputs[0]["data"]["text/plain"] == "True"
