"""Render a recipe's build steps as a Dockerfile on a minideb base (for clusters).

The build context is the recipe folder (images/<name>), so COPY sources are recipe-relative.
"""

import shlex

from cogbox.images.plan import (
    REQUIREMENTS,
    WHEEL_DIR,
    CopyIn,
    FetchWheels,
    Shell,
    build_steps,
    pip_download_args,
    requirements_text,
)
from cogbox.images.recipe import LoadedRecipe
from cogbox.sizes import parse_size

DISTRO_VERSIONS = {"bullseye": "debian11", "bookworm": "debian12", "trixie": "debian13"}
WHEELS_STAGE_IMAGE = "python:3.11-slim-bookworm"


def _run(script: str) -> str:
    # A heredoc keeps the script byte-for-byte what the local builder runs.
    return f"RUN <<'COGBOX_EOF'\nset -e\n{script}\nCOGBOX_EOF"


def render_dockerfile(loaded: LoadedRecipe) -> str:
    r = loaded.recipe
    out: list[str] = [
        f"# Rendered by `cogbox image dockerfile {r.name}` from images/{r.name}/"
        "recipe.yml; build context: that folder.",
        "",
    ]
    fetch = next(s for s in build_steps(loaded) if isinstance(s, FetchWheels))
    reqs = requirements_text(fetch.python).replace("\n", "\\n")
    download = shlex.join(["pip", *pip_download_args(fetch.python, fetch.glibc, WHEEL_DIR)])
    out += [
        f"FROM {WHEELS_STAGE_IMAGE} AS wheels",
        f"RUN mkdir -p {WHEEL_DIR} && printf '{reqs}' > {WHEEL_DIR}/{REQUIREMENTS} && \\\n"
        f"    {download}",
        "",
        f"FROM bitnami/minideb:{r.base.suite}",
    ]
    k = r.kernel
    labels = {
        "ai.backend.kernelspec": "1",
        "ai.backend.features": " ".join(k.features),
        "ai.backend.base-distro": DISTRO_VERSIONS[r.base.suite],
        "ai.backend.runtime-type": k.runtime_type,
        "ai.backend.runtime-path": k.runtime_path,
        "ai.backend.resource.min.cpu": f"{k.min_cpu:g}",
        "ai.backend.resource.min.mem": f"{parse_size(k.min_memory)}",
    }
    out.append(
        "LABEL "
        + " \\\n      ".join(
            f"{key}={shlex.quote(v) if v else chr(34) * 2}" for key, v in labels.items()
        )
    )
    if r.env:
        out.append("ENV " + " \\\n    ".join(f"{key}={shlex.quote(v)}" for key, v in r.env.items()))
    for step in build_steps(loaded):
        out.append(f"# {step.description}")
        if isinstance(step, FetchWheels):
            out.append(f"COPY --from=wheels {WHEEL_DIR} {WHEEL_DIR}")
        elif isinstance(step, CopyIn):
            out.append(f"COPY --chmod={step.mode:o} {step.relative_src} {step.dest}")
        elif isinstance(step, Shell):
            out.append(_run(step.script))
    out += [
        f"USER {r.user.uid}:{r.user.gid}",
        f"WORKDIR {r.user.home}",
        f"CMD [{k.runtime_path!r}]".replace("'", '"'),
        "",
    ]
    return "\n".join(out)
