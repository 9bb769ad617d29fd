"""`cogbox kernelspec`: Jupyter kernelspecs whose kernels run in cogbox jails."""

import json
import sys
import tempfile
from pathlib import Path

import click

# kernelspec name -> (image, display name)
KERNELSPECS = {
    "cogbox-cntk": ("cntk", "CNTK 2.7 (Python 2.7, cogbox jail)"),
    "cogbox-python": ("python", "Python 3 (cogbox jail)"),
    "cogbox-keras": ("keras", "Keras 3 on JAX (Python 3.11, cogbox jail)"),
}


def kernelspec_json(image: str, display_name: str) -> dict[str, object]:
    """The kernel.json of a kernelspec that starts `image`'s kernel through the proxy."""
    proxy = [sys.executable, "-m", "cogbox.kernel.proxy"]
    return {
        "argv": [*proxy, "--image", image, "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",  # SIGINT to the proxy, which interrupts the jailed kernel
        "metadata": {"cogbox": {"image": image}},
    }


@click.group()
def kernelspec() -> None:
    """Jupyter kernelspecs that run code in cogbox's jailed kernels."""


@kernelspec.command()
@click.option("--user", is_flag=True, help="Install for the current user only.")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    help="Install under PREFIX/share/jupyter/kernels (e.g. a virtualenv's sys.prefix).",
)
def install(user: bool, prefix: Path | None) -> None:
    """Install the cogbox-cntk, -python and -keras kernelspecs (default: system-wide)."""
    from jupyter_client.kernelspec import KernelSpecManager  # here: `cogbox --help` stays fast

    if user and prefix is not None:
        raise click.UsageError("give --user or --prefix, not both")
    manager = KernelSpecManager()
    for name, (image, display_name) in KERNELSPECS.items():
        with tempfile.TemporaryDirectory() as source:
            spec = kernelspec_json(image, display_name)
            (Path(source) / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
            try:
                where = manager.install_kernel_spec(
                    source,
                    kernel_name=name,
                    user=user,
                    prefix=str(prefix) if prefix is not None else None,
                )
            except OSError as exc:
                raise click.ClickException(
                    f"cannot install kernelspec {name}: {exc} (try --user or --prefix)"
                ) from exc
        click.echo(f"installed {name} (image {image}) in {where}")
