"""`cogbox session`: persistent sessions on a cogbox service, from the command line.

    export COGBOX_ENDPOINT=http://127.0.0.1:8090 COGBOX_ACCESS_KEY=... COGBOX_SECRET_KEY=...
    cogbox session create cntk --name train
    cogbox session exec train -c "x = 6 * 7"
    cogbox session exec train -c "print(x)"      # 42: variables live between runs
    cogbox session ls
    cogbox session rm train

Backend.AI's BACKEND_ENDPOINT/_ACCESS_KEY/_SECRET_KEY work too.
"""

import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

import click

from cogbox.cli import session_files
from cogbox.cli.endpoint_options import endpoint_options, resolve_endpoint
from cogbox.cli.logs import logs
from cogbox.cli.run import EXIT_INTERRUPTED, EXIT_OK, answer_input, show_event
from cogbox.service.status import ENDED

# The client (aiohttp) and rich are imported when a command runs, so `cogbox --help` stays fast;
# commands that make one call (ls, rm) use `endpoint.call` and never import aiohttp.
if TYPE_CHECKING:
    from cogbox.service.client import ServiceClient
    from cogbox.service.endpoint import Endpoint

_T = TypeVar("_T")


@click.group()
@endpoint_options
def session() -> None:
    """Sessions on a cogbox service (`cogbox serve`): create, list, run code, remove."""


async def _with_client(
    endpoint: "Endpoint", work: "Callable[[ServiceClient], Awaitable[_T]]"
) -> _T:
    from cogbox.service.client import ServiceClient

    async with ServiceClient(endpoint) as client:
        return await work(client)


def _endpoint(ctx: click.Context) -> "Endpoint":
    return resolve_endpoint(ctx)


def _run(ctx: click.Context, work: "Callable[[ServiceClient], Awaitable[_T]]") -> _T:
    import asyncio

    return asyncio.run(_with_client(_endpoint(ctx), work))


@contextmanager
def _progress(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal's stderr while something slow happens; nothing otherwise.
    Yields a function that changes the spinner's text (e.g. to an image build's step)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _: None
        return
    with console.status(message) as status:
        yield lambda text: status.update(text or message)


@session.command()
@endpoint_options
@click.argument("image")
@click.option("--name", help="A name to refer to the session by (default: generated).")
@click.option("--idle-timeout", type=float, help="Seconds without runs before it is reaped.")
@click.option("--max-lifetime", type=float, help="Seconds it may live at most.")
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE", help="Environment.")
@click.option(
    "--memory", metavar="SIZE", help="Its memory limit, e.g. 1g (default: the image policy's)."
)
@click.option(
    "--batch",
    "startup_command",
    metavar="COMMAND",
    help="Make it a job: run COMMAND once in /home/work, then end (see `cogbox logs`).",
)
@click.option("--depends", multiple=True, metavar="REF", help="A job starts after REF succeeded.")
@click.option("--batch-timeout", type=float, help="Seconds a job's command may run.")
@click.option("--output-limit", type=click.IntRange(min=1), help="Characters of one run sent back.")
@click.option(
    "--mount",
    "-v",
    "mounts",
    multiple=True,
    metavar="NAME[=PATH]",
    help="Mount storage folder NAME (`cogbox vfolder`) at /home/work/NAME or PATH.",
)
@click.option("--cpus", type=float, help="Cores for its cpu quota (default: the image policy's).")
@click.option(
    "--bootstrap-script",
    type=click.File("r"),
    help="A shell script run in /home/work before the first cell.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.pass_context
def create(
    ctx: click.Context,
    image: str,
    name: str | None,
    idle_timeout: float | None,
    max_lifetime: float | None,
    env_pairs: tuple[str, ...],
    memory: str | None,
    startup_command: str | None,
    depends: tuple[str, ...],
    batch_timeout: float | None,
    output_limit: int | None,
    mounts: tuple[str, ...],
    cpus: float | None,
    bootstrap_script: "TextIO | None",
    as_json: bool,
) -> None:
    """Start a session of IMAGE; prints its name and id.

    With --batch it is a job: it waits `pending` for --depends and for room under the
    keypair's limits, runs once and ends by itself, SUCCESS or FAILURE by exit status.

    If the service has no image IMAGE built yet, it builds it from its recipe first (the
    spinner shows the build's steps); that can take minutes.
    """
    env = {}
    for pair in env_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    extra: dict[str, object] = {"output_limit": output_limit} if output_limit else {}
    if startup_command is not None:
        extra.update(type="batch", startup_command=startup_command, depends=list(depends))
        if batch_timeout is not None:
            extra["batch_timeout"] = batch_timeout
    elif depends or batch_timeout is not None:
        raise click.UsageError("--depends and --batch-timeout are for jobs: add --batch COMMAND")
    script = bootstrap_script.read() if bootstrap_script is not None else None
    with _progress(f"starting a session of {image}...") as show:
        created = _run(
            ctx,
            lambda client: client.create_session(
                image,
                name=name,
                idle_timeout=idle_timeout,
                max_lifetime=max_lifetime,
                env=env,
                memory=memory,
                mounts=list(mounts),
                cpus=cpus,
                bootstrap_script=script,
                on_progress=show,
                extra=extra,
            ),
        )
    if as_json:
        click.echo(json.dumps(created, indent=1))
    else:
        click.echo(f"{created['name']}\t{created['id']}\t{created['status']}")


@session.command(name="ls")
@endpoint_options
@click.option("--all", "show_all", is_flag=True, help="Also sessions that ended.")
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as JSON.")
@click.pass_context
def list_sessions(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List your sessions (active ones, unless --all)."""
    from rich.console import Console
    from rich.table import Table

    from cogbox.service.endpoint import call

    sessions = list(call(_endpoint(ctx), "GET", "/v1/sessions")["sessions"])
    if not show_all:
        sessions = [s for s in sessions if s["status"] not in ENDED]
    if as_json:
        click.echo(json.dumps(sessions, indent=1))
        return
    table = Table("NAME", "ID", "IMAGE", "TYPE", "STATUS", "RESULT", "CREATED", "INFO", box=None)
    for s in sessions:
        table.add_row(
            s["name"],
            s["id"],
            s["image"],
            s.get("type", "interactive"),
            s["status"],
            _result(s),
            s["created_at"][:19],
            s["status_info"],
        )
    Console(width=200).print(table)


def _result(session: dict[str, object]) -> str:
    """A job's result and exit status ("FAILURE (exit 3)"); "" for other sessions."""
    result = str(session.get("result") or "")
    code = session.get("exit_code")
    return f"{result} (exit {code})" if result and code is not None else result


@session.command(name="exec")
@endpoint_options
@click.argument("ref")
@click.option("-c", "--code", help="Code to run (instead of FILE).")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--timeout", type=float, help="Time limit of the run, in seconds.")
@click.pass_context
def exec_code(
    ctx: click.Context, ref: str, code: str | None, file: Path | None, timeout: float | None
) -> None:
    """Run CODE (-c) or FILE ("-" for stdin) in session REF (its name or id).

    Output is streamed live; variables stay for the next run. Exit status as `cogbox run`:
    0 ok, 1 the code raised, 3 the kernel died, 124 --timeout passed, 130 Ctrl-C.
    """
    if (code is None) == (file is None):
        raise click.UsageError("give either -c CODE or FILE")
    if code is None:
        assert file is not None
        try:
            code = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {file}: {exc}", param_hint="FILE") from exc
    run_code: str = code

    async def stream(client: "ServiceClient") -> int:
        status = EXIT_OK
        async for event in client.execute(ref, run_code, timeout=timeout, on_input=answer_input):
            status = show_event(event, status)
        return status

    try:
        status = _run(ctx, stream)
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        status = EXIT_INTERRUPTED
    sys.exit(status)


@session.command(name="rm")
@endpoint_options
@click.argument("refs", nargs=-1, required=True)
@click.pass_context
def remove(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """End sessions REFS (names or ids); their files are deleted."""
    from cogbox.service.endpoint import call

    endpoint = _endpoint(ctx)
    for ref in refs:
        call(endpoint, "DELETE", f"/v1/sessions/{ref}")
        click.echo(f"removed {ref}")


@session.command()
@endpoint_options
@click.pass_context
def token(ctx: click.Context) -> None:
    """Print your keypair's token for the service's Jupyter API (/api/kernels).

    Jupyter clients send it as `Authorization: token <TOKEN>`; for jupyter_server's gateway
    client also set JUPYTER_GATEWAY_WS_URL=ws://HOST:PORT/t/<TOKEN> (its WebSocket sends
    no headers).
    """
    click.echo(_endpoint(ctx).jupyter_token)


session_files.register(session)
session.add_command(logs)  # `cogbox session logs`, as Backend.AI's client has it
