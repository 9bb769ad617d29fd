"""`cogbox image ...`: build, list, remove images and render their Dockerfile."""

import json
import time

import click
from rich.console import Console
from rich.table import Table

from cogbox.config import recipes_dir
from cogbox.images.builder import build_image
from cogbox.images.dockerfile import render_dockerfile
from cogbox.images.recipe import load_recipe
from cogbox.images.store import ImageStore
from cogbox.sizes import format_size


@click.group()
def image() -> None:
    """Build and manage images (root filesystems made from images/<name>/recipe.yml)."""


@image.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if the recipe is unchanged.")
def build(name: str, force: bool) -> None:
    """Build image NAME from its recipe (cached: an unchanged recipe is not rebuilt)."""
    loaded = load_recipe(recipes_dir() / name)
    console = Console(stderr=True, log_path=False)
    started = time.monotonic()
    step_started = [started]
    with console.status(f"building {name}") as status:

        def report(step: str) -> None:
            now = time.monotonic()
            status.update(f"[bold]{name}[/]: {step}")
            console.log(f"{step}", highlight=False)
            step_started[0] = now

        result = build_image(loaded, ImageStore(), report, force=force)
    took = time.monotonic() - started
    console.print(
        f"[green]ready[/] {result.name} {result.digest[:12]} "
        f"{format_size(result.size_bytes)} at {result.rootfs} ({took:.1f} s)"
    )


@image.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
def list_images(as_json: bool) -> None:
    """List images: name, digest, path, size on disk, build time, ready."""
    images = ImageStore().images()
    if as_json:
        click.echo(json.dumps([i.summary() for i in images], indent=2))
        return
    table = Table("name", "digest", "ready", "size", "built", "build time", "path")
    for i in images:
        s = i.summary()
        table.add_row(
            i.name,
            i.digest[:12],
            "yes" if i.ready else "no",
            format_size(i.size_bytes) if i.ready else "-",
            s["built_at"] or "-",
            f"{s['build_seconds']} s" if s["build_seconds"] else "-",
            str(i.path),
        )
    Console().print(table)


@image.command()
@click.argument("name")
def rm(name: str) -> None:
    """Remove image NAME (every built version of it)."""
    count = ImageStore().remove(name)
    click.echo(f"removed {name} ({count} folder{'s' if count != 1 else ''})")


@image.command()
@click.argument("name")
def dockerfile(name: str) -> None:
    """Print a Dockerfile for NAME (build context: images/NAME) from the same recipe."""
    click.echo(render_dockerfile(load_recipe(recipes_dir() / name)), nl=False)
