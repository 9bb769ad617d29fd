"""`cogbox keypair create | ls | rm`: the API keys that sign requests to `cogbox serve`."""

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from cogbox.service.names import DEFAULT_MAX_SESSIONS
from cogbox.sizes import format_size, parse_size

# SQLAlchemy is imported when a command opens the database: `cogbox --help` stays fast.
if TYPE_CHECKING:
    from cogbox.service.db import Database

_database_option = click.option(
    "--database-url",
    envvar="COGBOX_DATABASE_URL",
    help="SQLAlchemy URL of the service's database (default: SQLite in the data dir).",
)


def _db(url: str | None) -> "Database":
    from cogbox.service.config import default_database_url
    from cogbox.service.db import Database

    return Database(url or default_database_url())


@click.group()
def keypair() -> None:
    """Manage API keypairs (access key + secret key) of the service."""


@keypair.command()
@click.option(
    "--max-sessions",
    type=int,
    default=DEFAULT_MAX_SESSIONS,
    show_default=True,
    help="Most sessions the keypair may have at once.",
)
@click.option(
    "--max-memory",
    default=None,
    metavar="SIZE",
    help="Most memory (e.g. 8g) its sessions may hold together, counting each session's "
    "memory limit. Default: no cap.",
)
@click.option("--admin", is_flag=True, help="Mark the keypair as an administrator's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_database_option
def create(
    max_sessions: int,
    max_memory: str | None,
    admin: bool,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Create a keypair and print it (the secret is shown only here)."""
    if max_sessions < 1:
        raise click.BadParameter("must be at least 1", param_hint="--max-sessions")
    try:
        memory = None if max_memory is None else parse_size(max_memory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-memory") from exc
    from cogbox.service.keypairs import create_keypair

    record = create_keypair(
        _db(database_url), max_sessions=max_sessions, max_memory_bytes=memory, is_admin=admin
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "access_key": record.access_key,
                    "secret_key": record.secret_key,
                    "max_sessions": record.max_sessions,
                    "max_memory_bytes": record.max_memory_bytes,
                }
            )
        )
        return
    click.echo(f"export BACKEND_ACCESS_KEY={record.access_key}")
    click.echo(f"export BACKEND_SECRET_KEY={record.secret_key}")


@keypair.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_database_option
def list_keypairs(as_json: bool, database_url: str | None) -> None:
    """List keypairs (access keys and limits; never secrets)."""
    rows = [
        {
            "access_key": r.access_key,
            "created_at": datetime.fromtimestamp(r.created_at, UTC).isoformat(),
            "max_sessions": r.max_sessions,
            "max_memory_bytes": r.max_memory_bytes,
            "is_admin": r.is_admin,
            "is_active": r.is_active,
        }
        for r in _db(database_url).list_keypairs()
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        cap = row["max_memory_bytes"]
        memory = format_size(cap) if isinstance(cap, int) else "no cap"
        click.echo(
            f"{row['access_key']}  max_sessions={row['max_sessions']}  max_memory={memory}  "
            f"{row['created_at']}"
        )


@keypair.command(name="rm")
@click.argument("access_key")
@_database_option
def remove(access_key: str, database_url: str | None) -> None:
    """Remove keypair ACCESS_KEY: its requests are refused from then on."""
    if not _db(database_url).remove_keypair(access_key):
        raise click.ClickException(f"no keypair {access_key}")
    click.echo(f"removed {access_key}")
