"""`--endpoint`, `--access-key`, `--secret-key`: accepted in the same place on every command.

`cogbox session --endpoint URL ls` (on the group, as before) and `cogbox session ls
--endpoint URL` (on the command, like `cogbox run --endpoint URL` and `cogbox shell
--endpoint URL`) both work; a value given on the command wins over the group's, and either
over COGBOX_ENDPOINT / BACKEND_ENDPOINT (and the keys' variables).
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from cogbox.service.endpoint import Endpoint

_F = TypeVar("_F", bound=Callable[..., Any])
_KEY = "cogbox.endpoint"


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta.setdefault(_KEY, {})[param.name] = value


def endpoint_options(command: _F) -> _F:
    """Add the three options to `command`; `resolve_endpoint` reads them (they are not passed
    to the function)."""
    for name, help_text in (
        ("--secret-key", "Your keypair's secret key."),
        ("--access-key", "Your keypair's access key."),
        ("--endpoint", "The service's URL."),
    ):
        command = click.option(
            name, callback=_remember, expose_value=False, is_eager=True, help=help_text
        )(command)
    return command


def resolve_endpoint(ctx: click.Context) -> "Endpoint":
    """The endpoint of this command: the options given on it, else on its group (click's
    `ctx.meta` is shared down the chain, and the command's are parsed last), else the
    environment."""
    from cogbox.service.endpoint import Endpoint

    given: dict[str, str] = ctx.meta.get(_KEY, {})
    return Endpoint.resolve(given.get("endpoint"), given.get("access_key"), given.get("secret_key"))


def remote_requested(ctx: click.Context) -> bool:
    """Whether the command was pointed at a service: `--endpoint` or COGBOX_ENDPOINT (as
    `cogbox run` decides; Backend.AI's BACKEND_ENDPOINT alone does not make a shell remote)."""
    import os

    given: dict[str, str] = ctx.meta.get(_KEY, {})
    return bool(given.get("endpoint") or os.environ.get("COGBOX_ENDPOINT"))
