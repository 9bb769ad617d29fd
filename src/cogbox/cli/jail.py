"""`cogbox jail ...` commands: run a command of a built image inside the jail."""

import signal
import sys
from pathlib import Path
from types import FrameType

import click

# The launcher and the image store are imported in the commands: `cogbox --help` stays fast.
from cogbox.jail.runtimes import RUNTIMES


@click.group()
def jail() -> None:
    """Run commands inside the jail."""


@jail.command(context_settings={"ignore_unknown_options": True})
@click.option("--image", "image_name", required=True, help="Name of a built image.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Jail policy file (default: the image's own policy.yml).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Host directory shown as /home/work (default: a temporary one, deleted after).",
)
@click.option("--env", "env_pairs", multiple=True, metavar="K=V", help="Request a variable.")
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default="runc",
    show_default=True,
    help="OCI runtime: runc, or runsc (gVisor, a user-space kernel: the stronger boundary).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    image_name: str,
    policy_file: Path | None,
    workdir: Path | None,
    env_pairs: tuple[str, ...],
    runtime: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in IMAGE's jail, streaming its output; exit with its status.

    When a limit ends the command, the reason is printed to stderr and the exit status is
    128 + the signal (or the command's own status). Variables from --env pass only if the
    policy preserves them.
    """
    from cogbox.images.store import ImageStore
    from cogbox.jail.launcher import Jail, JailSpec
    from cogbox.jail.policy import load_policy, policy_or_default

    image = ImageStore().get(image_name)
    policy = load_policy(policy_file) if policy_file else policy_or_default(image.policy_path)
    env: dict[str, str] = {}
    for pair in env_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not K=V", param_hint="--env")
        env[key] = value
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)

    spec = JailSpec(image, policy, list(command), workdir=workdir, env=env)
    runner = Jail(runtime=runtime)

    # runc runs in its own session; pass the terminal's Ctrl-C and a TERM on to the command.
    def forward(signum: int, _frame: FrameType | None) -> None:
        runner.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.start(spec)
        exit = runner.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runner.cleanup()
    if exit.limit_hit:
        click.echo(f"cogbox: {exit.message}", err=True)
    sys.exit(exit.returncode)


@jail.command()
@click.option(
    "--slurm-job",
    metavar="JOBID",
    default=None,
    help="Also remove the jail cgroups left under this ended Slurm job (for a Slurm Epilog).",
)
def gc(slurm_job: str | None) -> None:
    """Remove what jails left behind when the process driving them died.

    Their containers are killed and deleted, their cgroups removed, /home/work copied back
    and unmounted. Jails of live processes are never touched; safe to run at any time.
    """
    from cogbox.jail.reaper import reap_stale_jails

    reaped = reap_stale_jails()
    for jail_id in reaped:
        click.echo(f"removed {jail_id}")
    click.echo(f"{len(reaped)} stale jail(s) removed")
    if slurm_job is not None:
        from cogbox.jail.cgroups import remove_slurm_job_leftovers

        for folder in remove_slurm_job_leftovers(slurm_job):
            click.echo(f"removed {folder}")
