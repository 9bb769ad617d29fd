"""`cogbox run`: run code once in a fresh jailed session, streaming its output live."""

import getpass
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

# cogbox.kernel.events is plain dataclasses; the kernel's and the client's stacks (jupyter_client,
# zmq, aiohttp) and rich are imported where a run needs them, so `cogbox --help` stays fast.
from cogbox.kernel.events import (
    Display,
    Error,
    Event,
    Finished,
    InputRequest,
    KernelDied,
    OutputTruncated,
    Result,
    Stderr,
    Stdout,
)

if TYPE_CHECKING:
    from rich.status import Status

EXIT_OK = 0
EXIT_ERROR = 1  # the code raised an exception it did not catch
EXIT_KERNEL_DIED = 3  # the kernel's jail ended: out of memory, a limit, a crash
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_INTERRUPTED = 130  # Ctrl-C
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@click.command()
@click.option("--image", "image_name", default="python", show_default=True, help="Image to run.")
@click.option("-c", "--code", help="Code to run (instead of FILE).")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Jail policy.yml to use instead of the image's own.",
)
@click.option("--timeout", type=float, help="Time limit of the run, in seconds.")
@click.option(
    "--endpoint",
    envvar="COGBOX_ENDPOINT",
    help="Run through a cogbox service at this URL instead of locally.",
)
@click.option("--access-key", envvar=["COGBOX_ACCESS_KEY", "BACKEND_ACCESS_KEY"])
@click.option("--secret-key", envvar=["COGBOX_SECRET_KEY", "BACKEND_SECRET_KEY"])
def run(
    image_name: str,
    code: str | None,
    file: Path | None,
    policy_file: Path | None,
    timeout: float | None,
    endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
) -> None:
    """Run CODE (-c) or FILE ("-" for stdin) in a new session of an image, then end it.

    Standard output and error are streamed as the code writes them. Exit status: 0 on
    success, 1 if the code raised an exception, 3 if the kernel died (the message names the
    limit it hit), 124 if --timeout passed, 130 on Ctrl-C.
    """
    if (code is None) == (file is None):
        raise click.UsageError("give either -c CODE or FILE")
    if code is None:
        assert file is not None
        code = sys.stdin.read() if str(file) == "-" else _read(file)
    if timeout is not None and timeout <= 0:
        raise click.BadParameter("must be a positive number of seconds", param_hint="--timeout")
    from cogbox.jail.policy import load_policy

    policy = load_policy(policy_file) if policy_file is not None else None
    # SIGTERM (a supervisor, `timeout`) ends us through `with`, so the jail is removed too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    status = EXIT_OK
    if endpoint:
        if policy is not None:
            raise click.UsageError("--policy applies to local runs only; the service decides")
        sys.exit(_run_remote(endpoint, access_key, secret_key, image_name, code, timeout))
    from cogbox.kernel.session import start_session

    with start_session(image_name, policy) as session:
        try:
            for event in session.execute(code, timeout=timeout, on_input=answer_input):
                status = show_event(event, status)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            status = EXIT_INTERRUPTED
    sys.exit(status)


def _run_remote(
    endpoint: str,
    access_key: str | None,
    secret_key: str | None,
    image_name: str,
    code: str,
    timeout: float | None,
) -> int:
    """The same run through `cogbox serve` at `endpoint`, with a spinner while it starts."""
    from rich.console import Console

    from cogbox.service.client import Endpoint, run_remote

    spinner = Console(stderr=True).status("starting a session...")
    status = EXIT_OK
    try:
        for event in run_remote(
            Endpoint.resolve(endpoint, access_key, secret_key),
            image_name,
            code,
            timeout=timeout,
            on_input=answer_input,
            on_progress=lambda message: _spin(spinner, message),
        ):
            status = show_event(event, status)
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        status = EXIT_INTERRUPTED
    finally:
        spinner.stop()
    return status


def _spin(spinner: "Status", message: str) -> None:
    if message:
        spinner.update(message)
        spinner.start()
    else:
        spinner.stop()


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {file}: {exc}", param_hint="FILE") from exc


def show_event(event: Event, status: int) -> int:
    """Print one event where it belongs; returns the exit status so far."""
    if isinstance(event, Stdout):
        _write(sys.stdout, event.text)
    elif isinstance(event, Stderr):
        _write(sys.stderr, event.text)
    elif isinstance(event, Result | Display):
        text = event.data.get("text/plain")
        if text is not None:
            _write(sys.stdout, text + "\n")
        elif event.data:
            _write(sys.stdout, f"[{', '.join(sorted(event.data))} output not shown]\n")
    elif isinstance(event, Error):
        lines = "\n".join(event.traceback) or f"{event.ename}: {event.evalue}"
        _write(sys.stderr, (lines if sys.stderr.isatty() else _ANSI.sub("", lines)) + "\n")
        return EXIT_ERROR
    elif isinstance(event, OutputTruncated):
        click.secho(f"\n{event.message}", fg="yellow", err=True)
    elif isinstance(event, Finished):
        if event.status == "timeout":
            click.secho(event.message, fg="red", err=True)
            return EXIT_TIMEOUT
        if event.status != "ok":
            return EXIT_ERROR
    elif isinstance(event, KernelDied):
        click.secho(f"error: the kernel died: {event.message}", fg="red", err=True)
        return EXIT_KERNEL_DIED
    return status


def answer_input(request: InputRequest) -> str:
    """Answer the code's input() from our stdin (an empty answer at end of input)."""
    if request.password and sys.stdin.isatty():
        return getpass.getpass(request.prompt)
    _write(sys.stdout, request.prompt)
    return sys.stdin.readline().rstrip("\n")


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()
