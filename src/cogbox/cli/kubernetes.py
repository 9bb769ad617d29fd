"""`cogbox kubernetes render`: manifests for the manager and the session pods, on paper."""

import json

import click


@click.group()
def kubernetes() -> None:
    """Kubernetes manifests (rendered and validated offline; see docs/kubernetes.md)."""


@kubernetes.command()
@click.option(
    "--session",
    "sessions",
    multiple=True,
    metavar="NAME[=REF]",
    help="A session image: its recipe NAME (its policy.yml) and container image REF "
    "(default cogbox/NAME:latest). Repeat; default: every recipe.",
)
@click.option("--namespace", default="cogbox", show_default=True)
@click.option("--manager-image", default="cogbox/manager:latest", show_default=True)
@click.option(
    "--database-secret",
    default="cogbox-database",
    show_default=True,
    help="Secret whose key `url` is the manager's database URL (not rendered).",
)
@click.option(
    "--runtime-class",
    default="gvisor",
    show_default=True,
    help="RuntimeClass (handler runsc) for session pods; `none` for the node's default.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="yaml: one document per manifest; json: a v1 List.",
)
def render(
    sessions: tuple[str, ...],
    namespace: str,
    manager_image: str,
    database_secret: str,
    runtime_class: str,
    output_format: str,
) -> None:
    """Print the manifests: `cogbox kubernetes render | kubectl apply -f -`."""
    import yaml

    from cogbox.cluster.kubernetes import Deployment, SessionImage, render_manifests
    from cogbox.config import recipes_dir
    from cogbox.jail.policy import load_policy

    recipes = recipes_dir()
    wanted = list(sessions) or sorted(
        p.parent.name for p in recipes.glob("*/policy.yml") if p.parent.is_dir()
    )
    images = []
    for entry in wanted:
        name, _, reference = entry.partition("=")
        policy_file = recipes / name / "policy.yml"
        if not name or "/" in name or not policy_file.is_file():
            raise click.BadParameter(
                f"no recipe {name!r} with a policy.yml in {recipes}", param_hint="--session"
            )
        images.append(
            SessionImage(name, reference or f"cogbox/{name}:latest", load_policy(policy_file))
        )
    manifests = render_manifests(
        Deployment(
            namespace=namespace,
            manager_image=manager_image,
            database_secret=database_secret,
            runtime_class=None if runtime_class == "none" else runtime_class,
            sessions=tuple(images),
        )
    )
    if output_format == "json":
        click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}, indent=2))
    else:
        click.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)
