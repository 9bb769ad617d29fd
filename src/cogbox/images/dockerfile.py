"""Render a recipe's build steps as a Dockerfile on a minideb base (for clusters).

The build context is the recipe folder (images/<name>), so COPY sources are recipe-relative.

The rendering is plain Dockerfile syntax that Debian 12's engines build (buildah 1.28, the
legacy builder of docker 20.10): no heredocs, no `COPY --chmod`, no `RUN --mount`. The
recipe's files are copied first; then every shell step runs in ONE `RUN`, each step's script
byte-for-byte what the local builder runs (`/bin/sh -ec "$(printf '%s\\n' LINE...)"`), so
cleanup and stripping happen in the layer that made the files and the image is no larger
than the local root filesystem. The pinned wheels are downloaded inside that same `RUN` by
Debian's own pip (installed for it, then purged): no layer ever holds them. The download uses
PyPI, or the index given with `--build-arg PIP_INDEX_URL=...`; behind a TLS-intercepting
proxy, give its CA with `--build-arg PIP_CERT=/path` and a volume (`buildah bud -v`).
"""

import shlex

from cogbox.images.plan import (
    REQUIREMENTS,
    WHEEL_DIR,
    CopyIn,
    FetchWheels,
    Shell,
    backend_ai_labels,
    build_steps,
    pip_download_args,
)
from cogbox.images.recipe import LoadedRecipe

DEFAULT_PIP_INDEX = "https://pypi.org/simple"


def fetch_wheels_script(step: FetchWheels) -> str:
    """The Dockerfile's stand-in for the host-side download: Debian's pip fetches the pins."""
    pins = " ".join(f"{name}=={version}" for name, version in step.python.pins().items())
    download = shlex.join(
        ["python3", "-m", "pip", *pip_download_args(step.python, step.glibc, WHEEL_DIR)]
    )
    # Purge exactly what python3-pip brought in: `--auto-remove` would keep packages that
    # something installed merely recommends (ca-certificates, openssl).
    listed = "dpkg-query -W -f '${Package}\\n' | sort"
    return "\n".join(
        [
            "export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1",
            f"{listed} > /tmp/cogbox-debs-before",
            "apt-get install -y -q --no-install-recommends python3-pip",
            f"mkdir -p {WHEEL_DIR}",
            f"printf '%s\\n' {pins} > {WHEEL_DIR}/{REQUIREMENTS}",
            f"{download} -q",
            f"apt-get purge -y -q $({listed} | comm -13 /tmp/cogbox-debs-before -)",
            "rm -f /tmp/cogbox-debs-before",
        ]
    )


def _sh(description: str, script: str) -> str:
    # `printf '%s\n'` of the quoted lines rebuilds the script exactly, newlines included,
    # inside a plain `RUN`: what a heredoc does, in syntax every builder parses.
    lines = " \\\n      ".join(shlex.quote(line) for line in script.split("\n"))
    echo = f"echo {shlex.quote('>> ' + description)}"
    return f"{echo} && \\\n  /bin/sh -ec \"$(printf '%s\\n' \\\n      {lines})\""


def render_dockerfile(loaded: LoadedRecipe) -> str:
    r = loaded.recipe
    steps = build_steps(loaded)
    out: list[str] = [
        f"# Rendered by `cogbox image dockerfile {r.name}` from images/{r.name}/"
        "recipe.yml; build context: that folder.",
        "# Plain syntax (no heredocs, no BuildKit): `buildah bud --network host` or "
        "`docker build --network host`.",
        f"FROM bitnami/minideb:{r.base.suite}",
        f"ARG PIP_INDEX_URL={DEFAULT_PIP_INDEX}",
        "ARG PIP_CERT",
    ]
    labels = backend_ai_labels(r.base.suite, r.kernel)
    out.append(
        "LABEL "
        + " \\\n      ".join(
            f"{key}={shlex.quote(v) if v else chr(34) * 2}" for key, v in labels.items()
        )
    )
    if r.env:
        out.append("ENV " + " \\\n    ".join(f"{key}={shlex.quote(v)}" for key, v in r.env.items()))
    copies = [s for s in steps if isinstance(s, CopyIn)]
    for copy in copies:
        out.append(f"# {copy.description}")
        out.append(f"COPY {copy.relative_src} {copy.dest}")
    chmods = "\n".join(f"chmod {s.mode:o} {shlex.quote(s.dest)}" for s in copies)
    runs = [_sh("set the copied files' modes", chmods)] if copies else []
    for step in steps:
        if isinstance(step, FetchWheels):
            runs.append(_sh(step.description, fetch_wheels_script(step)))
        elif isinstance(step, Shell):
            runs.append(_sh(step.description, step.script))
    out.append("# Every shell step in one layer, so the last steps' cleanup shrinks it.")
    out.append("RUN " + " && \\\n  ".join(runs))
    k = r.kernel
    out += [
        f"USER {r.user.uid}:{r.user.gid}",
        f"WORKDIR {r.user.home}",
        f"CMD [{k.runtime_path!r}]".replace("'", '"'),
        "",
    ]
    return "\n".join(out)
