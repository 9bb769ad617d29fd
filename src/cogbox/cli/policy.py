"""`cogbox policy ...` commands."""

import click


@click.group()
def policy() -> None:
    """Jail policy commands."""
