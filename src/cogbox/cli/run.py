"""`cogbox run`: run code once in a fresh jailed session, streaming its output live."""

import getpass
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from cogbox.cli.figures import save_figure
from cogbox.cli.script import ScriptError, ScriptRun, prepare_script

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


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--image", "image_name", default="python", show_default=True, help="Image to run.")
@click.option("-c", "--code", help="Code to run as a notebook cell (instead of FILE).")
@click.option(
    "--upload",
    "uploads",
    multiple=True,
    metavar="PATH[:DEST]",
    help="A file or folder (its tree kept) to put in /home/work before FILE runs, as its own "
    "name or DEST; repeatable.",
)
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
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
    uploads: tuple[str, ...],
    file: Path | None,
    args: tuple[str, ...],
    policy_file: Path | None,
    timeout: float | None,
    endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
) -> None:
    """Run the script FILE with ARGS, or CODE (-c) or "-" (stdin) as a notebook cell, in a
    new session of an image, then end it.

    FILE runs as `python FILE ARGS...` in /home/work with the image's own Python (real
    sys.argv, __file__, __name__ == "__main__"), after FILE and each --upload are put there;
    its standard input is empty. Standard output and error are streamed as the code writes
    them. Exit status: a script's own (128 + N if killed by signal N); for a cell 0 on
    success, 1 if the code raised an exception; 3 if the kernel died (the message names the
    limit it hit), 124 if --timeout passed, 130 on Ctrl-C.
    """
    if (code is None) == (file is None):
        raise click.UsageError("give either -c CODE or FILE")
    script = None
    if file is not None and str(file) != "-":
        script = _prepare(file, args, uploads)
        code = script.command
    elif args or uploads:
        raise click.UsageError("ARGS and --upload go with a script FILE, not -c CODE or -")
    if code is None:
        code = sys.stdin.read()
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
        sys.exit(_run_remote(endpoint, access_key, secret_key, image_name, code, timeout, script))
    from cogbox.kernel.session import start_session

    with start_session(image_name, policy) as session:
        try:
            if script is None:
                events = session.execute(code, timeout=timeout, on_input=answer_input)
            else:
                for upload in script.uploads:
                    session.upload(upload.dest, upload.data)
                events = session.execute_batch(None, code, timeout=timeout)
            for event in events:
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
    script: ScriptRun | None,
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
            uploads=[(u.dest, u.data) for u in script.uploads] if script else (),
            batch=script is not None,
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


def _prepare(file: Path, args: tuple[str, ...], uploads: tuple[str, ...]) -> ScriptRun:
    """The script's files, read (and their destinations checked) before a session starts."""
    try:
        return prepare_script(file, args, uploads)
    except ScriptError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE / --upload") from exc


def show_event(event: Event, status: int) -> int:
    """Print one event where it belongs; returns the exit status so far."""
    if isinstance(event, Stdout):
        _write(sys.stdout, event.text)
    elif isinstance(event, Stderr):
        _write(sys.stderr, event.text)
    elif isinstance(event, Result | Display):
        text = event.data.get("text/plain")
        if _saved_figure(event.data):
            pass  # its text/plain is only a caption, e.g. "<Figure size 640x480 with 1 Axes>"
        elif text is not None:
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
        if event.exit_code is not None:  # a script's own status is ours
            return event.exit_code
        if event.status != "ok" and event.message:
            click.secho(event.message, fg="red", err=True)
        if event.status != "ok":
            return EXIT_ERROR
    elif isinstance(event, KernelDied):
        click.secho(f"error: the kernel died: {event.message}", fg="red", err=True)
        return EXIT_KERNEL_DIED
    return status


def _saved_figure(data: dict[str, str]) -> bool:
    """Save a figure in `data` to a file and say where (on stderr: stdout is the code's)."""
    try:
        path = save_figure(data)
    except (ValueError, OSError) as exc:
        click.secho(f"[figure not saved: {exc}]", fg="yellow", err=True)
        return False
    if path is not None:
        click.secho(f"[figure saved to {path}]", fg="cyan", err=True)
    return path is not None


def answer_input(request: InputRequest) -> str:
    """Answer the code's input() from our stdin (an empty answer at end of input)."""
    if request.password and sys.stdin.isatty():
        return getpass.getpass(request.prompt)
    _write(sys.stdout, request.prompt)
    return sys.stdin.readline().rstrip("\n")


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()
