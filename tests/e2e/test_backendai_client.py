"""End to end: the unmodified PyPI `backend.ai-client` (23.3.x, in a venv of its own) against
`cogbox serve`: the seed's snippets via `backend.ai run --rm cntk -c ...`, sessions kept
without --rm, upload/download, and `backend.ai ps`."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogbox.config import data_dir
from cogbox.images.store import Image
from tests.seed import CNTK_MINUS, CNTK_SQUARED_ERROR, HELLO_WORLD
from tests.service.support import Client, Service, running_service

CLIENT_SPEC = "backend.ai-client==23.3.*"


@pytest.fixture(scope="module")
def backendai() -> Path:
    """The `backend.ai` command, from a venv of its own (made once, kept in the cache)."""
    venv = data_dir() / "cache" / "backendai-client-23.3"
    command = venv / "bin" / "backend.ai"
    if not command.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        install = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", CLIENT_SPEC],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            pytest.skip(f"cannot install {CLIENT_SPEC}: {install.stderr[-500:]}")
    return command


@pytest.fixture(scope="module")
def bai_service(
    python_image: Image, cntk_image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("bai")) as service:
        yield service


@pytest.fixture(scope="module")
def keys(bai_service: Service) -> Client:
    return bai_service.keypair()


def run_client(
    backendai: Path, keys: Client, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BACKEND_ENDPOINT": keys.url,
        "BACKEND_ACCESS_KEY": keys.access_key,
        "BACKEND_SECRET_KEY": keys.secret_key,
        "BACKEND_ENDPOINT_TYPE": "api",
    }
    return subprocess.run(
        [str(backendai), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (HELLO_WORLD, "hello world"),
        (CNTK_SQUARED_ERROR, "[ 29.]"),
        (CNTK_MINUS, "[-3. -3. -3.]"),
    ],
    ids=["hello-world", "cntk-squared-error", "cntk-minus"],
)
def test_backendai_run_rm_prints_the_seed_output(
    backendai: Path, keys: Client, snippet: str, expected: str
) -> None:
    result = run_client(backendai, keys, "run", "--rm", "cntk", "-c", snippet)
    assert (result.returncode, expected in result.stdout) == (0, True), result.stderr


def test_backendai_run_keras_snippet_uses_the_cntk_backend(backendai: Path, keys: Client) -> None:
    result = run_client(backendai, keys, "run", "--rm", "cntk", "-c", "import keras")
    assert "Using CNTK backend" in result.stderr, result.stderr


def test_backendai_run_without_rm_keeps_the_session_listed_by_ps(
    backendai: Path, keys: Client
) -> None:
    run = run_client(backendai, keys, "run", "--name", "kept-e2e", "python", "-c", "x = 1")
    ps = run_client(backendai, keys, "ps")
    assert run.returncode == 0, run.stderr
    assert [line.split()[0] for line in ps.stdout.splitlines() if "RUNNING" in line] == [
        "kept-e2e"
    ], ps.stdout + ps.stderr
    run_client(backendai, keys, "session", "destroy", "kept-e2e")


def test_backendai_upload_download_round_trip(
    backendai: Path, keys: Client, tmp_path: Path
) -> None:
    (tmp_path / "data.txt").write_text("round trip\n")
    run_client(backendai, keys, "run", "--name", "files-e2e", "python", "-c", "pass")
    upload = run_client(backendai, keys, "session", "upload", "files-e2e", "data.txt", cwd=tmp_path)
    made = run_client(
        backendai,
        keys,
        "run",
        "--name",
        "files-e2e",
        "python",
        "-c",
        "open('upper.txt', 'w').write(open('data.txt').read().upper())",
    )
    dest = tmp_path / "back"
    dest.mkdir()
    download = run_client(
        backendai, keys, "session", "download", "files-e2e", "data.txt", "upper.txt",
        "--dest", str(dest),
    )  # fmt: skip
    run_client(backendai, keys, "session", "destroy", "files-e2e")
    assert (upload.returncode, made.returncode, download.returncode) == (0, 0, 0), (
        upload.stderr + made.stderr + download.stderr
    )
    assert ((dest / "data.txt").read_text(), (dest / "upper.txt").read_text()) == (
        "round trip\n",
        "ROUND TRIP\n",
    )
