"""The `cogbox` command line: thin wrappers that call the parts (images, jail, ...)."""

import sys

import click

from cogbox.cli.agent import agent
from cogbox.cli.image import image
from cogbox.cli.jail import jail
from cogbox.cli.kernelspec import kernelspec
from cogbox.cli.keypair import keypair
from cogbox.cli.kubernetes import kubernetes
from cogbox.cli.logs import logs
from cogbox.cli.policy import policy
from cogbox.cli.run import run
from cogbox.cli.serve import serve
from cogbox.cli.session import session
from cogbox.cli.shell import shell
from cogbox.cli.vfolder import vfolder
from cogbox.errors import CogboxError


@click.group()
@click.version_option(package_name="cogbox")
def cli() -> None:
    """Sandboxed, persistent deep-learning code sessions."""


cli.add_command(image)
cli.add_command(policy)
cli.add_command(jail)
cli.add_command(run)
cli.add_command(serve)
cli.add_command(agent)
cli.add_command(keypair)
cli.add_command(kernelspec)
cli.add_command(session)
cli.add_command(shell)
cli.add_command(logs)
cli.add_command(vfolder)
cli.add_command(kubernetes)


def main() -> None:
    """Entry point: user-facing errors print one clear line and exit 2, no traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except CogboxError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
