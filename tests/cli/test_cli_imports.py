"""The CLI starts fast because it imports the service's stack only where a command needs it.

A structural check, not a timing: a fresh interpreter imports the CLI and runs `--help` (of
the command and of every group), then we look at what `sys.modules` holds. Importing aiohttp,
SQLAlchemy, zmq or jupyter_client at the top of a CLI module (or of a module it imports)
brings `cogbox --help` back from ~0.1 s to over 1 s; benchmarks/cli_start.py has the figures.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("aiohttp", "sqlalchemy", "zmq", "jupyter_client")
GROUPS = [
    "image", "jail", "kernelspec", "keypair", "logs", "policy", "run", "serve", "session", "shell"
]  # fmt: skip

_PROBE = """
import json, sys
from cogbox.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="cogbox", standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {heavy!r})))
"""


def _heavy_modules_after(*args: str) -> list[str]:
    probe = _PROBE.format(heavy=set(HEAVY))
    out = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_cogbox_help_imports_none_of_the_service_stack() -> None:
    assert _heavy_modules_after("--help") == []


@pytest.mark.slow  # a fresh interpreter per command group: ~4 s in all
@pytest.mark.parametrize("group", GROUPS)
def test_each_commands_help_imports_none_of_the_service_stack(group: str) -> None:
    assert _heavy_modules_after(group, "--help") == []


@pytest.mark.slow  # a fresh interpreter importing aiohttp: ~1.3 s
def test_the_probe_sees_a_heavy_import() -> None:
    # The check itself works: a command that does import the stack is seen doing so.
    assert "sqlalchemy" in _heavy_modules_after("keypair", "ls", "--database-url", "sqlite://")


def test_the_service_client_imports_no_server_code() -> None:
    # What `cogbox session ...` loads to make a request; aiohttp is the client's own.
    server = {"sqlalchemy", "zmq", "jupyter_client"}
    probe = f"import sys, cogbox.service.client; print(sorted({{*sys.modules}} & {server!r}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


_LS_PROBE = """
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

class Sessions(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"sessions": []}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Sessions)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ.update(
    COGBOX_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
    COGBOX_ACCESS_KEY="AKIATESTTESTTESTTEST",
    COGBOX_SECRET_KEY="s" * 40,
)
from cogbox.cli import cli
cli.main(["session", "ls", "--json"], prog_name="cogbox", standalone_mode=False)
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in HEAVY)))
"""


def test_session_ls_makes_its_request_without_aiohttp() -> None:
    # One call needs no aiohttp (~160 ms to import): endpoint.call uses the standard library.
    out = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {set(HEAVY)!r}\n{_LS_PROBE}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    listed, loaded = out.splitlines()[-2:]
    assert (json.loads(listed), json.loads(loaded)) == ([], [])
