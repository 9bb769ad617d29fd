"""`cogbox jail ...` commands."""

import click


@click.group()
def jail() -> None:
    """Jail jail commands."""
