"""`cogbox policy ...`: check a jail policy file and render it for runc, Docker or Kubernetes."""

import json
import shlex
from pathlib import Path
from typing import Any

import click

# The policy model (pydantic, YAML) and renderers are imported in the commands that use them,
# so that `cogbox --help` stays fast.


@click.group()
def policy() -> None:
    """Jail policy commands."""


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Check policy FILE: exit 0 with a summary, or name each bad line and exit 2."""
    from cogbox.jail.policy import load_policy

    loaded = load_policy(file)
    click.echo(f"{file}: ok")
    for line in loaded.describe():
        click.echo(f"  {line}")


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["oci", "docker", "docker-run", "kubernetes"]),
    default="oci",
    show_default=True,
)
@click.option("--rootfs", default="rootfs", show_default=True, help="oci: root filesystem.")
@click.option("--workdir", default="workdir", show_default=True, help="oci: host /home/work.")
@click.option("--image", default=None, help="kubernetes: image (default cogbox/<policy dir>).")
@click.option("--profile-name", default=None, help="kubernetes: profile file name.")
@click.option(
    "--seccomp-profile",
    default="seccomp.json",
    show_default=True,
    help="docker-run: where the `--format docker` profile was written.",
)
def render(
    file: Path,
    args: tuple[str, ...],
    output_format: str,
    rootfs: str,
    workdir: str,
    image: str | None,
    profile_name: str | None,
    seccomp_profile: str,
) -> None:
    """Print policy FILE as JSON: an OCI config.json running ARGS (default /bin/sh), a Docker
    seccomp profile, or a Kubernetes pod fragment with its profile. docker-run prints the
    `docker run` / `podman run` flags instead (what they cannot enforce goes to stderr)."""
    from cogbox.jail.engine_flags import not_enforced, render_engine_flags
    from cogbox.jail.kubernetes import render_kubernetes
    from cogbox.jail.oci import Bind, jail_env, render_oci_spec
    from cogbox.jail.policy import WORKDIR, load_policy
    from cogbox.jail.seccomp import render_docker_profile

    # Stand-ins for what the launcher knows at start time (the image's env, the session dir).
    placeholder_image_env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": WORKDIR,
        "LANG": "C.UTF-8",
    }
    loaded = load_policy(file)
    if output_format == "docker-run":
        flags = render_engine_flags(loaded, seccomp_profile=seccomp_profile)
        click.echo(" \\\n".join(shlex.quote(flag) for flag in flags))
        for gap in not_enforced(loaded):
            click.echo(f"# not enforced by these flags: {gap}", err=True)
        return
    name = file.resolve().parent.name or "default"
    rendered: dict[str, Any]
    if output_format == "docker":
        rendered = render_docker_profile(loaded)
    elif output_format == "kubernetes":
        rendered = render_kubernetes(
            loaded, image=image or f"cogbox/{name}", profile_name=profile_name or name
        )
    else:
        rendered = render_oci_spec(
            loaded,
            rootfs=Path(rootfs),
            args=list(args) or ["/bin/sh"],
            env=jail_env(loaded, placeholder_image_env, {}),
            binds=[Bind(Path(workdir), WORKDIR, readonly=False)],
        )
    click.echo(json.dumps(rendered, indent=2))
