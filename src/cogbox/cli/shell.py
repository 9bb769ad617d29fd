"""`cogbox shell`: an interactive prompt on a jailed session, like a terminal notebook."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

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


@click.command()
@click.option("--image", "image_name", default="python", show_default=True, help="Image to use.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Jail policy.yml to use instead of the image's own.",
)
def shell(image_name: str, policy_file: Path | None) -> None:
    """An interactive session: type code, see its output; state persists between cells.

    Ctrl-C interrupts the running cell (the session lives on); Ctrl-D ends the session.
    """
    from cogbox.jail.policy import load_policy
    from cogbox.kernel.session import start_session

    policy = load_policy(policy_file) if policy_file is not None else None
    click.echo(f"starting a {image_name} session...", err=True)
    with start_session(image_name, policy) as session:
        click.echo("ready: Ctrl-C interrupts a cell, Ctrl-D quits", err=True)
        count = 1
        while True:
            cell = _read_cell(count)
            if cell is None:
                break
            if cell.strip():
                _run_cell(session, cell)
                count += 1


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


def _run_cell(session: "Session", cell: str) -> None:
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
