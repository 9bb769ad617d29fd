"""`cogbox image ...`: build, list, remove images and render their Dockerfile."""

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

# The image tools and rich are imported in the commands that use them: `cogbox --help` stays fast.
if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console
    from rich.status import Status

    from cogbox.images.oci import ArchiveFormat


@click.group()
def image() -> None:
    """Build and manage images (root filesystems made from images/<name>/recipe.yml)."""


@image.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if the recipe is unchanged.")
def build(name: str, force: bool) -> None:
    """Build image NAME from its recipe (cached: an unchanged recipe is not rebuilt)."""
    from rich.console import Console

    from cogbox.config import recipes_dir
    from cogbox.images.builder import build_image
    from cogbox.images.recipe import load_recipe
    from cogbox.images.store import ImageStore
    from cogbox.sizes import format_size

    loaded = load_recipe(recipes_dir() / name)
    console = Console(stderr=True, log_path=False)
    started = time.monotonic()
    with console.status(f"building {name}") as status:
        result = build_image(loaded, ImageStore(), _reporter(console, status, name), force=force)
    took = time.monotonic() - started
    console.print(
        f"[green]ready[/] {result.name} {result.digest[:12]} "
        f"{format_size(result.size_bytes)} at {result.rootfs} ({took:.1f} s)"
    )


@image.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
def list_images(as_json: bool) -> None:
    """List images: name, digest, path, size on disk, build time, ready."""
    from rich.console import Console
    from rich.table import Table

    from cogbox.images.oci import exports
    from cogbox.images.store import ImageStore
    from cogbox.sizes import format_size

    images = ImageStore().images()
    if as_json:
        click.echo(json.dumps([{**i.summary(), "exports": exports(i)} for i in images], indent=2))
        return
    table = Table("name", "digest", "ready", "size", "built", "build time", "exported", "path")
    for i in images:
        s = i.summary()
        done = exports(i)
        exported = [f"oci {done['oci']['manifest_digest'][7:19]}"] if "oci" in done else []
        exported += [f"{p['ref']} {p['digest'][7:19]}" for p in done.get("pushes", [])]
        table.add_row(
            i.name,
            i.digest[:12],
            "yes" if i.ready else "no",
            format_size(i.size_bytes) if i.ready else "-",
            s["built_at"] or "-",
            f"{s['build_seconds']} s" if s["build_seconds"] else "-",
            "\n".join(exported) or "-",
            str(i.path),
        )
    Console().print(table)


@image.command()
@click.argument("name")
def rm(name: str) -> None:
    """Remove image NAME (every built version of it)."""
    from cogbox.images.store import ImageStore

    count = ImageStore().remove(name)
    click.echo(f"removed {name} ({count} folder{'s' if count != 1 else ''})")


@image.command()
@click.argument("name")
def dockerfile(name: str) -> None:
    """Print a Dockerfile for NAME (build context: images/NAME) from the same recipe."""
    from cogbox.config import recipes_dir
    from cogbox.images.dockerfile import render_dockerfile
    from cogbox.images.recipe import load_recipe

    click.echo(render_dockerfile(load_recipe(recipes_dir() / name)), nl=False)


@image.command()
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["oci", "docker-archive"]),
    default="oci",
    show_default=True,
    help="oci: an OCI archive (podman, containerd, skopeo); docker-archive: for `docker load`.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Remake the OCI layout even if one exists.")
def export(name: str, fmt: "ArchiveFormat", output: Path, force: bool) -> None:
    """Write built image NAME as a container image archive (one layer: its rootfs)."""
    from rich.console import Console

    from cogbox.images.oci import export_archive, oci_layout
    from cogbox.images.store import ImageStore
    from cogbox.sizes import format_size

    built = ImageStore().get(name)
    console = Console(stderr=True, log_path=False)
    started = time.monotonic()
    with console.status(f"exporting {name}") as status:
        report = _reporter(console, status, name)
        if force:
            oci_layout(built, report, force=True)
        result = export_archive(built, fmt, output, report)
    console.print(
        f"[green]exported[/] {name} {fmt} {output} ({format_size(output.stat().st_size)}, "
        f"{time.monotonic() - started:.1f} s)\n"
        f"  manifest {result.manifest_digest}\n"
        f"  layer    {result.layer_digest} ({format_size(result.layer_bytes)} compressed, "
        f"{format_size(result.layer_tar_bytes)} as tar)"
    )


@image.command(name="push")
@click.argument("name")
@click.argument("ref")
@click.option(
    "--tls-verify/--no-tls-verify",
    default=True,
    show_default=True,
    help="--no-tls-verify: a plain-HTTP registry (e.g. one on loopback).",
)
def push_image(name: str, ref: str, tls_verify: bool) -> None:
    """Push built image NAME to a registry as REF (host[:port]/repository[:tag])."""
    from rich.console import Console

    from cogbox.images.oci import push
    from cogbox.images.store import ImageStore

    built = ImageStore().get(name)
    console = Console(stderr=True, log_path=False)
    with console.status(f"pushing {name}") as status:
        digest = push(built, ref, tls_verify=tls_verify, report=_reporter(console, status, name))
    click.echo(f"{ref}@{digest}")


def _reporter(console: "Console", status: "Status", name: str) -> "Callable[[str], None]":
    """A progress callback: each step shown on the spinner and logged above it."""

    def report(step: str) -> None:
        status.update(f"[bold]{name}[/]: {step}")
        console.log(step, highlight=False)

    return report
