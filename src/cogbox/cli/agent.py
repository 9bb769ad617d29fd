"""`cogbox agent`: the process that owns this node's kernels (`cogbox serve` starts one)."""

from pathlib import Path

import click

from cogbox.cli.serve import parse_pools


def _parse_listen(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    from cogbox.agent.tls import parse_listen

    if value is None:
        return None
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="The agent's 0700 folder (socket, key, lock, log); default: agent/ in the service dir.",
)
@click.option(
    "--sessions-dir", type=click.Path(file_okay=False, path_type=Path), help="Sessions' work dirs."
)
@click.option(
    "--logs-dir", type=click.Path(file_okay=False, path_type=Path), help="Sessions' full logs."
)
@click.option(
    "--vfolders-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Storage folders' mounts (<id>/mnt), as the manager mounts them; default: vfolders/ "
    "in the service dir.",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    metavar="IMAGE=N",
    callback=parse_pools,
    help="Keep N started kernels of IMAGE ready (repeat for several images).",
)
@click.option(
    "--listen",
    callback=_parse_listen,
    metavar="tcp://ADDR:PORT",
    help="Serve on TCP with TLS 1.3 (a self-signed certificate, its fingerprint published in "
    "the folder's agent.address) for a manager on another machine; default: the unix socket.",
)
def agent(
    folder: Path | None,
    sessions_dir: Path | None,
    logs_dir: Path | None,
    vfolders_dir: Path | None,
    pools: dict[str, int],
    listen: tuple[str, int] | None,
) -> None:
    """Own this node's jails and kernels, for the manager (`cogbox serve`) on its channel.

    Kernels outlive the manager: `cogbox serve` re-attaches to this agent when it restarts.
    """
    from cogbox.agent.channel import AgentPlace
    from cogbox.agent.process import run_agent
    from cogbox.service.config import service_dir

    base = service_dir()
    run_agent(
        AgentPlace(folder or base / "agent"),
        sessions_dir=sessions_dir or base / "sessions",
        logs_dir=logs_dir or base / "logs",
        vfolders_dir=vfolders_dir or base / "vfolders",
        pools=pools,
        listen=listen,
    )
