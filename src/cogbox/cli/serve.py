"""`cogbox serve`: the HTTP service (the manager), which starts and supervises a local agent."""

import click

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
DEFAULT_POOLS = ("python=1", "cntk=1", "keras=1")


def parse_pools(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, int]:
    pools: dict[str, int] = {}
    for value in values:
        image, _, count = value.partition("=")
        if not image or not count.isdigit():
            raise click.BadParameter(f"{value!r}: use IMAGE=N, e.g. cntk=2", ctx, param)
        pools[image] = int(count)
    return pools


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, type=int, help="TCP port.")
@click.option(
    "--database-url",
    envvar="COGBOX_DATABASE_URL",
    help="SQLAlchemy URL (default: SQLite in the data dir), e.g. postgresql+psycopg://...",
)
@click.option(
    "--idle-timeout",
    type=float,
    default=3600,
    show_default=True,
    help="Seconds a session may run no code before it is reaped.",
)
@click.option(
    "--max-lifetime",
    type=float,
    default=86400,
    show_default=True,
    help="Seconds a session may live at most.",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    default=DEFAULT_POOLS,
    show_default=True,
    metavar="IMAGE=N",
    callback=parse_pools,
    help="Keep N started kernels of IMAGE ready, so new sessions start at once (0: none; "
    "repeat for several images). Pools fill once the image is built.",
)
@click.option(
    "--output-limit",
    type=click.IntRange(min=1),
    default=524_288,
    show_default=True,
    help="Characters of one run's output sent to its client (a session may ask for its own); "
    "what it drops is still in the session's log.",
)
@click.option(
    "--log-limit",
    default="1g",
    show_default=True,
    metavar="SIZE",
    help="The most each session's full log (stdout and stderr) may hold, e.g. 1g.",
)
@click.option(
    "--vfolder-quota",
    default="10g",
    show_default=True,
    help="The quota of a storage folder made without one.",
)
@click.option(
    "--vfolder-keypair-quota",
    default="100g",
    show_default=True,
    help="What all the storage folders of one keypair may hold together (their quotas).",
)
@click.option(
    "--agent",
    envvar="COGBOX_AGENT",
    type=click.Choice(["process", "embedded"]),
    default="process",
    show_default=True,
    help="Where kernels run: a `cogbox agent` process that outlives this one (kernels survive "
    "a restart of the service), or embedded in this process.",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "slurm"]),
    default="local",
    show_default=True,
    help="Where sessions run: this machine (see --agent), or each session as a job of the "
    "Slurm cluster of SLURM_CONF, its agent on the node Slurm picks (docs/slurm.md: the "
    "service's folders must be on a filesystem the nodes share).",
)
@click.option(
    "--slurm-partition",
    envvar="COGBOX_SLURM_PARTITION",
    help="The partition sessions' jobs go to (default: the cluster's default).",
)
@click.option(
    "--slurm-manager-host",
    envvar="SLURM_DEV_HOST_ADDR",
    help="An address of this machine the nodes route to (default: this host's name).",
)
@click.option(
    "--slurm-start-wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds a create waits for Slurm to place the session before it answers with "
    "the session pending (Slurm's reason in its status_info).",
)
@click.option(
    "--allow-remote", is_flag=True, help="Allow a non-loopback --host (put TLS in front of it)."
)
def serve(
    host: str,
    port: int,
    database_url: str | None,
    idle_timeout: float,
    max_lifetime: float,
    pools: dict[str, int],
    output_limit: int,
    log_limit: str,
    vfolder_quota: str,
    vfolder_keypair_quota: str,
    agent: str,
    backend: str,
    slurm_partition: str | None,
    slurm_manager_host: str | None,
    slurm_start_wait: float,
    allow_remote: bool,
) -> None:
    """Serve Backend.AI's client API (at /) and cogbox's native API (at /v1).

    Requests are signed with keypairs made by `cogbox keypair create`.
    """
    # The service's stack is imported only here, so `cogbox --help` stays fast.
    from sqlalchemy.engine import make_url

    from cogbox.service import ServiceConfig
    from cogbox.service import serve as run_service
    from cogbox.sizes import parse_size

    if host not in _LOOPBACK and not allow_remote:
        raise click.BadParameter(
            f"{host} is not a loopback address; add --allow-remote to listen on it "
            "(request bodies are not signed: use TLS in front)",
            param_hint="--host",
        )
    try:
        folder_quota, keypair_quota = parse_size(vfolder_quota), parse_size(vfolder_keypair_quota)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--vfolder-quota") from exc
    try:
        log_limit_bytes = parse_size(log_limit)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--log-limit") from exc
    if log_limit_bytes <= 0:
        raise click.BadParameter("must be more than 0 bytes", param_hint="--log-limit")
    config = ServiceConfig(
        host=host,
        port=port,
        idle_timeout=idle_timeout,
        max_lifetime=max_lifetime,
        pools=pools,
        output_limit=output_limit,
        log_limit_bytes=log_limit_bytes,
        vfolder_quota=folder_quota,
        vfolder_keypair_quota=keypair_quota,
        agent="slurm" if backend == "slurm" else agent,
        slurm_partition=slurm_partition,
        slurm_manager_host=slurm_manager_host,
        slurm_start_wait=slurm_start_wait,
    )
    if database_url:
        config = config.model_copy(update={"database_url": database_url})
    database = make_url(config.database_url).render_as_string(hide_password=True)
    click.echo(f"cogbox service on http://{host}:{port} (database {database})", err=True)
    run_service(config)
