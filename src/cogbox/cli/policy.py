"""`cogbox policy ...`: check a jail policy file and render it for runc, Docker or Kubernetes."""

import json
import shlex
from pathlib import Path
from typing import Any

import click

from cogbox.jail.runtimes import RUNTIMES

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
@click.option(
    "--runtime", type=click.Choice(RUNTIMES), default="runc", show_default=True, help="oci."
)
@click.option(
    "--identity-slot",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="oci: the host identity slot whose ids the jail's user namespace maps.",
)
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
    runtime: str,
    identity_slot: int,
    image: str | None,
    profile_name: str | None,
    seccomp_profile: str,
) -> None:
    """Print policy FILE as JSON: an OCI config.json running ARGS (default /bin/sh), a Docker
    seccomp profile, or a Kubernetes pod fragment with its profile. docker-run prints the
    `docker run` / `podman run` flags instead (what they cannot enforce goes to stderr).

    The OCI config is the one the launcher writes to a jail's bundle, with stand-ins for
    what only a start knows (root filesystem, /home/work, the image's env, the cgroups path,
    the chmod guard's socket, GPU devices); memory and pids are limited on the launcher's
    parent cgroup, not in the config (stderr says so)."""
    from cogbox.images.paths import WORKDIR
    from cogbox.jail.engine_flags import not_enforced, render_engine_flags
    from cogbox.jail.identity import Identity
    from cogbox.jail.kubernetes import render_kubernetes
    from cogbox.jail.oci import DEFAULT_ENV, Bind, jail_env, render_oci_spec
    from cogbox.jail.policy import load_policy
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
        guarded = loaded.chmod_globs is not None and runtime == "runc"
        rendered = render_oci_spec(
            loaded,
            rootfs=Path(rootfs),
            args=list(args) or ["/bin/sh"],
            env=jail_env(loaded, placeholder_image_env, DEFAULT_ENV),
            binds=[Bind(Path(workdir), WORKDIR, readonly=False)],
            seccomp_listener=_CHMOD_GUARD_SOCKET if guarded else None,
            identity=Identity(identity_slot),
            runtime=runtime,
            init=True,
            limits_on_parent_cgroup=True,
        )
        limits = loaded.limits
        click.echo(
            f"# memory {limits.memory_bytes} bytes and pids {limits.pids}: set on the "
            "launcher's parent cgroup, not in config.json",
            err=True,
        )
        if loaded.gpu:
            click.echo("# gpu: the host's GPU devices are added at start", err=True)
    click.echo(json.dumps(rendered, indent=2))


# Where the chmod guard of a started jail listens (in its bundle); a stand-in here.
_CHMOD_GUARD_SOCKET = "chmod.sock"
