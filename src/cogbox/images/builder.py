"""Build a recipe into a ready root filesystem in the image store, without a Docker engine.

Debian's debootstrap makes the base system (cached per suite), the host's pip downloads the
pinned wheels (cached), and each build step runs inside the new root with bubblewrap.
"""

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cogbox.errors import CogboxError
from cogbox.images.plan import (
    WHEEL_DIR,
    CopyIn,
    FetchWheels,
    Shell,
    build_digest,
    build_steps,
    pip_download_args,
    requirements_text,
)
from cogbox.images.recipe import LoadedRecipe
from cogbox.images.rootfs import run_in_rootfs
from cogbox.images.store import Image, ImageStore

Report = Callable[[str], None]


class BuildError(CogboxError):
    """A build step failed; the message names the step and the cause."""


def build_image(
    loaded: LoadedRecipe, store: ImageStore, report: Report = lambda _: None, *, force: bool = False
) -> Image:
    """Build `loaded` unless an image with the same digest is ready; returns the ready image."""
    digest = build_digest(loaded)
    if not force and (ready := store.find(loaded.name, digest)) is not None:
        return ready
    with store.lock(loaded.name):
        if not force and (ready := store.find(loaded.name, digest)) is not None:
            return ready
        store.remove_stale_staging(loaded.name)
        staging = store.staging_dir(loaded.name, digest)
        try:
            manifest = _build_into(loaded, store, staging, report)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        manifest["digest"] = digest
        return store.publish(staging, loaded.name, digest, manifest)


def _build_into(
    loaded: LoadedRecipe, store: ImageStore, staging: Path, report: Report
) -> dict[str, Any]:
    started = time.monotonic()
    recipe = loaded.recipe
    steps = build_steps(loaded)
    wheels = store.cache_dir / "wheels" / f"{recipe.python.abi}"
    # Downloads first: a missing or mistyped package fails in seconds, not after debootstrap.
    for step in steps:
        if isinstance(step, FetchWheels):
            report(step.description)
            _download_wheels(step, wheels)
    rootfs = staging / "rootfs"
    staging.mkdir(parents=True)
    report(f"Debian {recipe.base.suite} base system")
    base = _base_system(recipe.base.suite, store.cache_dir, report)
    subprocess.run(["cp", "-a", "--reflink=auto", f"{base}/.", str(rootfs)], check=True)
    for step in steps:
        if isinstance(step, FetchWheels):
            report("add the downloaded packages")
            target = rootfs / WHEEL_DIR.lstrip("/")
            target.mkdir(parents=True)
            for wheel in wheels.iterdir():
                os.link(wheel, target / wheel.name)
            continue
        report(step.description)
        if isinstance(step, CopyIn):
            dest = rootfs / step.dest.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(step.src, dest)
            dest.chmod(step.mode)
        else:
            _run_step(rootfs, step, recipe.base.suite)
    report("recording installed packages and size")
    return {
        "name": recipe.name,
        "description": recipe.description,
        "suite": recipe.base.suite,
        "env": recipe.env,
        "user": recipe.user.model_dump(),
        "kernel": recipe.kernel.model_dump(),
        "debian_packages": _debian_packages(rootfs),
        "python_packages": _python_packages(rootfs, recipe.python.interpreter),
        "size_bytes": disk_usage(rootfs),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
    }


def _download_wheels(step: FetchWheels, wheels: Path) -> None:
    wheels.mkdir(parents=True, exist_ok=True)
    (wheels / "requirements.txt").write_text(requirements_text(step.python))
    args = pip_download_args(step.python, step.glibc, str(wheels))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        missing = re.search(r"No matching distribution found for (\S+)", proc.stderr)
        if missing:
            raise BuildError(
                f"Python package {missing[1]} was not found on PyPI for Python "
                f"{step.python.version} ({step.python.abi}, glibc "
                f"{step.glibc[0]}.{step.glibc[1]}): check the name and version in the recipe"
            )
        raise BuildError(f"downloading Python packages failed:\n{_tail(proc.stderr)}")


def _base_system(suite: str, cache: Path, report: Report) -> Path:
    """A debootstrapped minbase of `suite`, made once and reused by every build."""
    base = cache / "base" / suite
    if (base / ".complete").exists():
        return base
    tmp = cache / "base" / f".tmp-{suite}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    debs = cache / "debs" / suite
    debs.mkdir(parents=True, exist_ok=True)
    cmd = ["debootstrap", "--variant=minbase", f"--cache-dir={debs}", suite, str(tmp)]
    if mirror := os.environ.get("COGBOX_DEBIAN_MIRROR"):
        cmd.append(mirror)
    report(f"debootstrap {suite} (once; cached for later builds)")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"debootstrap {suite} failed:\n{_tail(proc.stdout + proc.stderr)}")
    (tmp / ".complete").touch()
    shutil.rmtree(base, ignore_errors=True)
    os.rename(tmp, base)
    return base


def _run_step(rootfs: Path, step: Shell, suite: str) -> None:
    proc = run_in_rootfs(rootfs, ["/bin/sh", "-ec", step.script])
    if proc.returncode == 0:
        return
    output = proc.stdout + proc.stderr
    missing = re.search(r"Unable to locate package (\S+)", output)
    if missing:
        raise BuildError(
            f"Debian package {missing[1]!r} does not exist in {suite}: "
            "check debian_packages in the recipe"
        )
    raise BuildError(
        f"build step failed: {step.description} (exit {proc.returncode}):\n{_tail(output)}"
    )


def _debian_packages(rootfs: Path) -> dict[str, str]:
    proc = run_in_rootfs(rootfs, ["dpkg-query", "-W", "-f", "${Package}=${Version}\\n"])
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _python_packages(rootfs: Path, interpreter: str) -> dict[str, str]:
    proc = run_in_rootfs(
        rootfs, [interpreter, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"]
    )
    if proc.returncode != 0:
        raise BuildError(f"cannot list Python packages in the image:\n{_tail(proc.stderr)}")
    return dict(line.split("==", 1) for line in proc.stdout.splitlines() if "==" in line)


def disk_usage(path: Path) -> int:
    """Bytes on disk under `path` (hard links counted once), as `du` reports."""
    out = subprocess.run(
        ["du", "-sx", "-B1", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[0])


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
