"""`cogbox shell`: an interactive prompt on a jailed session, like a terminal notebook.

Local (a kernel started here) or, with `--endpoint` (or COGBOX_ENDPOINT), a session on a
cogbox service, removed when the shell ends. Line editing, history and Tab completion at a
terminal come from `cogbox.cli.line_editing`.
"""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import click

from cogbox.cli.endpoint_options import endpoint_options
from cogbox.cli.line_editing import Completer, KernelComplete, line_editing
from cogbox.cli.run import answer_input, show_event
from cogbox.kernel.events import KernelDied

# The kernel's stack (jupyter_client, zmq) is imported when a shell starts: `--help` stays fast.
if TYPE_CHECKING:
    from cogbox.kernel.session import Session

_OPENERS, _CLOSERS = "([{", ")]}"


def needs_more(lines: list[str]) -> bool:
    """Whether a cell typed so far continues on the next line: an open bracket, a trailing
    `:` or `\\`, or an indented block not yet closed by an empty line."""
    text = "\n".join(lines)
    depth = sum(text.count(c) for c in _OPENERS) - sum(text.count(c) for c in _CLOSERS)
    last = lines[-1]
    if depth > 0 or last.rstrip().endswith((":", "\\")):
        return True
    in_block = any(line.rstrip().endswith(":") for line in lines[:-1])
    return in_block and last.strip() != ""


class Cells(Protocol):
    """Where the shell's cells run."""

    def run(self, cell: str) -> None: ...

    @property
    def complete(self) -> KernelComplete | None: ...


@click.command()
@endpoint_options
@click.option("--image", "image_name", default="python", show_default=True, help="Image to use.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Jail policy.yml to use instead of the image's own (local shells only).",
)
@click.option("--local", is_flag=True, help="Start the kernel here even if COGBOX_ENDPOINT is set.")
@click.pass_context
def shell(ctx: click.Context, image_name: str, policy_file: Path | None, local: bool) -> None:
    """An interactive session: type code, see its output; state persists between cells.

    Ctrl-C interrupts the running cell (the session lives on); Ctrl-D ends the session. At a
    terminal: line editing, history (~/.cogbox_history) and Tab completion.
    """
    from cogbox.cli.endpoint_options import remote_requested

    if not local and remote_requested(ctx):
        if policy_file is not None:
            raise click.UsageError("--policy applies to local shells; the service's is its own")
        from cogbox.cli.remote_shell import remote_cells

        with remote_cells(ctx, image_name) as cells:
            _loop(cells)
        return
    from cogbox.jail.policy import load_policy
    from cogbox.kernel.session import start_session

    policy = load_policy(policy_file) if policy_file is not None else None
    click.echo(f"starting a {image_name} session...", err=True)
    with start_session(image_name, policy) as session:
        _loop(_LocalCells(session))


def _loop(cells: Cells) -> None:
    click.echo("ready: Ctrl-C interrupts a cell, Ctrl-D quits", err=True)
    with line_editing(cells.complete) as completer:
        count = 1
        while True:
            cell = _read_cell(count)
            if cell is None:
                break
            if cell.strip():
                cells.run(cell)
                _note(completer, cell)
                count += 1


def _note(completer: Completer | None, cell: str) -> None:
    if completer is not None:
        completer.note(cell)


class _LocalCells:
    def __init__(self, session: "Session") -> None:
        self._session = session

    @property
    def complete(self) -> KernelComplete:
        def complete(code: str, cursor: int) -> tuple[list[str], int]:
            found = self._session.complete(code, cursor)
            return found.matches, found.cursor_start

        return complete

    def run(self, cell: str) -> None:
        session = self._session
        try:
            for event in session.execute(cell, on_input=answer_input):
                show_event(event, 0)
                if isinstance(event, KernelDied):
                    click.echo("restarting the kernel (files in /home/work are kept)", err=True)
                    session.restart()
        except KeyboardInterrupt:
            session.interrupt()
            click.echo("\ninterrupted", err=True)
        sys.stdout.flush()


def _read_cell(count: int) -> str | None:
    lines: list[str] = []
    while True:
        prompt = f"In [{count}]: " if not lines else " " * (len(str(count)) + 4) + "...: "
        try:
            # Prompts only for a person at a terminal, as python's own REPL does.
            lines.append(input(prompt if sys.stdin.isatty() else ""))
        except EOFError:
            click.echo(err=True)
            return None
        except KeyboardInterrupt:
            click.echo("^C", err=True)
            return ""
        if not needs_more(lines):
            return "\n".join(lines)
