"""Running `cogbox serve` as a real process, and a signing HTTP client for it."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from cogbox.service.auth import signed_headers

SERVE = [sys.executable, "-c", "from cogbox.cli.serve import serve; serve()"]
KEYPAIR = [sys.executable, "-c", "from cogbox.cli.keypair import keypair; keypair()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Signer(requests.auth.AuthBase):
    """Signs each prepared request as Backend.AI's clients do."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        content_type = str(r.headers.get("Content-Type", "application/octet-stream"))
        headers = signed_headers(
            access_key=self.access_key,
            secret_key=self.secret_key,
            method=str(r.method),
            path_with_query=r.path_url,
            host=urlsplit(str(r.url)).netloc,
            content_type=content_type.split(";")[0].strip(),
        )
        headers.pop("Content-Type")
        r.headers.update(headers)
        return r


@dataclass
class Service:
    """A `cogbox serve` process with its own database and session files."""

    directory: Path
    database_url: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COGBOX_DATABASE_URL": self.database_url,
            "COGBOX_SERVICE_DIR": str(self.directory),
            **self.extra_env,
        }

    def start(self, *args: str) -> "Service":
        log = open(self.directory / "service.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [*SERVE, "--port", str(self.port), *args], env=self.env(), stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
            if self.process.poll() is not None:
                break
        raise RuntimeError(f"the service did not start: {self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._stop_leftover_agent()

    def _stop_leftover_agent(self) -> None:
        """A stopped serve tells its agent to stop; one still running afterwards (its
        shutdown stuck, or serve killed before it could ask) would hold kernels past the
        test: stop it, and say so in its log."""
        folder = self.directory / "agent"
        try:
            pid = int((folder / "agent.pid").read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return
        if str(folder) not in command:
            return
        # It may still be stopping its kernels as serve asked; then it was stuck.
        for sig, wait in ((None, 10.0), (signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
            if sig is not None:
                with open(folder / "agent.log", "a") as log:
                    log.write(f"tests: the agent outlived its serve; sending it {sig.name}\n")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _running(pid):
                time.sleep(0.1)
            if not _running(pid):
                return

    def log(self) -> str:
        path = self.directory / "service.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def keypair(self, *args: str) -> "Client":
        out = subprocess.run(
            [*KEYPAIR, "create", "--json", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        pair = json.loads(out)
        return Client(self.url, pair["access_key"], pair["secret_key"])


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, whose reaper is not us, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass
class Client:
    """Signed requests to a service as one keypair."""

    url: str
    access_key: str
    secret_key: str

    @property
    def signer(self) -> Signer:
        return Signer(self.access_key, self.secret_key)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return requests.request(method, self.url + path, auth=self.signer, **kwargs)

    def create(self, image: str = "python", **body: Any) -> dict[str, Any]:
        response = self.request("POST", "/v1/sessions", json={"image": image, **body})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def execute(self, ref: str, code: str, **body: Any) -> dict[str, Any]:
        response = self.request("POST", f"/v1/sessions/{ref}/execute", json={"code": code, **body})
        assert response.status_code == 200, response.text
        return dict(response.json())


def stdout_of(result: dict[str, Any]) -> str:
    return "".join(e["text"] for e in result["events"] if e["kind"] == "stdout")


def needs_runc() -> bool:
    return shutil.which("runc") is not None and os.geteuid() == 0


@contextlib.contextmanager
def running_service(directory: Path, *args: str, **options: Any) -> Iterator[Service]:
    """A service on a fresh SQLite database in `directory`, started with the command line
    `args`, stopped at the end; the test is skipped where sessions cannot run."""
    if not needs_runc():
        pytest.skip("sessions need root and runc")
    service = Service(directory, f"sqlite:///{directory / 'cogbox.db'}", **options).start(*args)
    try:
        yield service
    finally:
        service.stop()
