"""A recipe as an ordered list of build steps: the one source both renderings follow.

The local builder (builder.py) runs these steps in a debootstrapped root filesystem; the
Dockerfile renderer (dockerfile.py) writes the same steps as Dockerfile instructions. Shell
steps are literally the same script in both, so the two cannot drift apart.
"""

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from cogbox.images.paths import JAIL_INIT, JAIL_RUNTIME_DIR, POLICY_PATH
from cogbox.images.recipe import DEBIAN_SUITES, KernelInfo, LoadedRecipe, PythonSpec
from cogbox.sizes import parse_size

WHEEL_DIR = "/tmp/cogbox-wheels"
POLICY_DEST = POLICY_PATH
# JAIL_RUNTIME_DIR and JAIL_INIT are mount points the jail binds over. They must exist in the
# image, because the root filesystem is shared read-only by every jail and the runtime must
# not create them there.
REQUIREMENTS = "requirements.txt"
DISTRO_VERSIONS = {"bullseye": "debian11", "bookworm": "debian12", "trixie": "debian13"}

# Debug symbols are a sixth of the Python packages' size (numpy 1.13's wheel ships them).
# binutils' strip can misalign the LOAD segments of libraries that auditwheel rewrote with
# patchelf (ld.so: "ELF load command address/offset not properly aligned"), so each stripped
# copy is checked the way ld.so checks it and kept only if every segment is aligned.
STRIP_SCRIPT = r"""
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends binutils
aligned() {
  readelf -lW "$1" | while read -r kind offset vaddr rest; do
    [ "$kind" = LOAD ] || continue
    [ $(( (offset - vaddr) % ${rest##* } )) -eq 0 ] || return 1
  done
}
find /usr/local/lib -xdev -type f -name '*.so*' | while read -r lib; do
  strip -g -o /tmp/stripped "$lib" && aligned /tmp/stripped && cat /tmp/stripped > "$lib"
  rm -f /tmp/stripped
done
apt-get purge -y -q --auto-remove binutils
""".strip()

# What a kernel never needs: docs, man pages, translations, caches, headers, static
# libraries and test suites. Each line is one `rm`/`find`, so a failure names its line.
SLIM_SCRIPT = r"""
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/lintian /usr/share/linda
rm -rf /usr/share/locale/* /var/cache/apt/* /var/lib/apt/lists/* /var/cache/debconf/*-old
rm -rf /var/log/* /root/.cache /tmp/* /usr/include /usr/share/bug /usr/share/common-licenses
find /usr/lib /usr/local/lib -xdev -name '*.a' -type f -delete
find /usr/lib/python* -maxdepth 1 -type d \( -name test -o -name tests \) -exec rm -rf {} +
find /usr/local/lib/python*/dist-packages -depth -type d -name tests -exec rm -rf {} +
find /usr/local/lib/python*/dist-packages -depth -type d -name test -exec rm -rf {} +
""".strip()


@dataclass(frozen=True)
class Shell:
    """A script run as root inside the image (`RUN` in a Dockerfile)."""

    description: str
    script: str


@dataclass(frozen=True)
class CopyIn:
    """A file from the recipe folder copied into the image (`COPY` in a Dockerfile)."""

    description: str
    src: Path = field(repr=False)  # where this checkout keeps it: not part of the digest
    relative_src: str
    dest: str
    mode: int


@dataclass(frozen=True)
class FetchWheels:
    """Download the pinned Python packages for the image's interpreter into WHEEL_DIR.

    Done outside the image (on the host, or in a Dockerfile's first stage): the image's own
    old pip may not speak to today's TLS, and downloads stay cached between builds.
    """

    description: str
    python: PythonSpec
    glibc: tuple[int, int]


BuildStep = Shell | CopyIn | FetchWheels


def backend_ai_labels(suite: str, kernel: KernelInfo) -> dict[str, str]:
    """Backend.AI's image labels (what its agent reads to run a kernel), for every rendering."""
    return {
        "ai.backend.kernelspec": "1",
        "ai.backend.features": " ".join(kernel.features),
        "ai.backend.base-distro": DISTRO_VERSIONS[suite],
        "ai.backend.runtime-type": kernel.runtime_type,
        "ai.backend.runtime-path": kernel.runtime_path,
        "ai.backend.resource.min.cpu": f"{kernel.min_cpu:g}",
        "ai.backend.resource.min.mem": f"{parse_size(kernel.min_memory)}",
    }


def requirements_text(python: PythonSpec) -> str:
    return "".join(f"{name}=={version}\n" for name, version in python.pins().items())


def pip_download_args(python: PythonSpec, glibc: tuple[int, int], dest: str) -> list[str]:
    """`pip download` arguments fetching exactly the pins, for the image's Python and glibc."""
    platforms = [f"manylinux_{glibc[0]}_{minor}_x86_64" for minor in range(glibc[1], 4, -1)]
    platforms += [
        "manylinux2014_x86_64",
        "manylinux2010_x86_64",
        "manylinux1_x86_64",
        "linux_x86_64",
    ]
    args = [
        "download",
        "--no-deps",
        "--dest",
        dest,
        "--python-version",
        python.version,
        "--implementation",
        "cp",
        "--abi",
        python.abi,
    ]
    for platform in platforms:
        args += ["--platform", platform]
    return [*args, "-r", f"{dest}/{REQUIREMENTS}"]


def pip_install_script(python: PythonSpec) -> str:
    """Install pip and setuptools from their wheels, then every pin offline, then `pip check`."""
    py = shlex.quote(python.interpreter)
    w = WHEEL_DIR
    quiet = "--no-cache-dir --disable-pip-version-check --no-warn-script-location -q"
    return "\n".join(
        [
            "export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null",
            f"set -- {w}/pip-{python.pip}-*.whl {w}/setuptools-{python.setuptools}-*.whl",
            # pip runs straight from its own wheel to install itself: no other bootstrap needed.
            f'{py} "$1/pip" install {quiet} --no-deps "$@"',
            f"{py} -m pip install {quiet} --no-deps --no-build-isolation --find-links {w} "
            f"-r {w}/{REQUIREMENTS}",
            f"{py} -m pip check",
            f"rm -rf {w}",
        ]
    )


def build_digest(loaded: LoadedRecipe) -> str:
    """sha256 of everything that shapes the image: the recipe, the steps it renders to (so a
    change to the builder's scripts rebuilds), and the bytes of every file they copy in."""
    h = hashlib.sha256()
    recipe = loaded.recipe.model_dump(mode="json")
    if not recipe["kernel"]["extensions"]:  # added later: at its default, old digests stand
        del recipe["kernel"]["extensions"]
    h.update(json.dumps(recipe, sort_keys=True).encode())
    for step in build_steps(loaded):
        h.update(repr(step).encode())
        if isinstance(step, CopyIn):
            h.update(step.src.read_bytes())
    return h.hexdigest()


def build_steps(loaded: LoadedRecipe) -> list[BuildStep]:
    """The ordered steps that turn a Debian base system into the recipe's image."""
    r = loaded.recipe
    steps: list[BuildStep] = []
    if r.debian_packages:
        pkgs = " ".join(r.debian_packages)
        steps.append(
            Shell(
                f"install Debian packages: {pkgs}",
                "export DEBIAN_FRONTEND=noninteractive\n"
                "apt-get update -q\n"
                f"apt-get install -y -q --no-install-recommends {pkgs}",
            )
        )
    steps.append(
        FetchWheels(
            f"download {len(r.python.pins())} pinned Python packages",
            r.python,
            DEBIAN_SUITES[r.base.suite],
        )
    )
    steps.append(
        Shell(
            "install Python packages (offline, exact pins, pip check)", pip_install_script(r.python)
        )
    )
    u = r.user
    steps.append(
        Shell(
            f"create user {u.name} ({u.uid}:{u.gid}, {u.home})",
            f"groupadd -g {u.gid} {u.name}\n"
            f"useradd -m -u {u.uid} -g {u.gid} -d {u.home} -s /bin/sh {u.name}",
        )
    )
    if r.links:
        steps.append(
            Shell(
                "create links",
                "\n".join(
                    f"ln -sfn {shlex.quote(link.target)} {shlex.quote(link.path)}"
                    for link in r.links
                ),
            )
        )
    for item in r.files:
        steps.append(
            CopyIn(f"add {item.dest}", loaded.file_source(item), item.src, item.dest, item.mode)
        )
    steps.append(
        CopyIn(f"add jail policy {POLICY_DEST}", loaded.policy_path, r.policy, POLICY_DEST, 0o644)
    )
    if r.run:
        steps.append(Shell("run the recipe's commands", "\n".join(r.run)))
    steps.append(
        Shell(
            "create the jail's mount points",
            f"mkdir -p {JAIL_RUNTIME_DIR}\ninstall -m 0755 /dev/null {JAIL_INIT}",
        )
    )
    steps.append(Shell("strip debug symbols from shared libraries", STRIP_SCRIPT))
    steps.append(Shell("remove what a kernel never needs", SLIM_SCRIPT))
    return steps
