"""The host's NVIDIA GPUs given to a jail whose policy says `gpu: true`.

What the NVIDIA container toolkit does for engines, in the three parts a jail needs:

- the device nodes (`/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia0`...) in the jail's
  /dev (runc binds them from the host in a user namespace), allowed by the device cgroup
  rule for exactly their major:minor numbers (everything else stays denied);
- the driver's user-space libraries (`libcuda.so.1`, `libnvidia-ml.so.1`, ...), which must
  match the host's kernel module, copied once per driver version into a root-owned folder
  under the data dir and bound read-only at `/usr/local/nvidia/lib64` (the image puts that
  on its `LD_LIBRARY_PATH`); copies, not links, so nothing in the jail resolves to a host path;
- nothing else: no host tools, no `/proc/driver` writes, no capabilities.

A policy asking for a GPU on a host without one is refused by name, never run without it.
"""

import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogbox.errors import CogboxError

DRIVER_DIR = "/usr/local/nvidia/lib64"  # in the jail; the gpu images' LD_LIBRARY_PATH
# The driver's user-space parts that CUDA programs load (by soname prefix).
DRIVER_LIBRARIES = (
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-ml.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libnvidia-gpucomp.so",
)
_CONTROL_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
_GPU_DEVICE = re.compile(r"nvidia[0-9]+")
_LDCONFIG_LINE = re.compile(r"^\s*(\S+) \(([^)]*)\) => (\S+)$")


class NoGpuError(CogboxError):
    """The policy asks for GPUs this host does not have (or cannot give)."""


@dataclass(frozen=True)
class Device:
    """A character device node of the host, by path and major:minor number."""

    path: str
    major: int
    minor: int


@dataclass(frozen=True)
class NvidiaHost:
    """The host's NVIDIA devices and the driver libraries that match them."""

    devices: tuple[Device, ...]
    libraries: tuple[Path, ...]  # host paths, each named by its soname (libcuda.so.1, ...)
    driver_version: str


def find_gpus(dev: Path = Path("/dev"), ldconfig: str | None = None) -> NvidiaHost | None:
    """The host's NVIDIA GPUs, or None if it has none (no /dev/nvidiactl or no GPU node).

    `ldconfig` is `ldconfig -p`'s output (read from the host when None). Raises NoGpuError
    when the devices exist but the driver's libraries cannot be found.
    """
    names = sorted(p.name for p in dev.glob("nvidia*"))
    gpus = [n for n in names if _GPU_DEVICE.fullmatch(n)]
    if "nvidiactl" not in names or not gpus:
        return None
    devices = tuple(
        _device(dev / name) for name in (*_CONTROL_DEVICES, *gpus) if (dev / name).exists()
    )
    output = ldconfig if ldconfig is not None else _ldconfig()
    libraries = _driver_libraries(output)
    cuda = next((p for p in libraries if p.name == "libcuda.so.1"), None)
    if cuda is None:
        raise NoGpuError(
            "this host has NVIDIA devices but no libcuda.so.1 in the linker cache "
            "(`ldconfig -p`): install the driver's user-space libraries"
        )
    return NvidiaHost(devices, libraries, _version_of(cuda))


def require_gpus(dev: Path = Path("/dev"), ldconfig: str | None = None) -> NvidiaHost:
    """`find_gpus`, or NoGpuError saying why a `gpu: true` policy cannot run here."""
    found = find_gpus(dev, ldconfig)
    if found is None:
        raise NoGpuError(
            "the policy asks for the host's GPUs (gpu: true), but this host has none "
            f"({dev / 'nvidiactl'} and {dev / 'nvidia0'} are missing)"
        )
    return found


def driver_folder(host: NvidiaHost, data_dir: Path) -> Path:
    """A root-owned folder holding copies of the driver's libraries, made once per version.

    Made in a staging folder and renamed into place, so a half-made copy is never bound.
    """
    root = data_dir / "gpu"
    final = root / f"driver-{host.driver_version}"
    if final.is_dir():
        return final
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    staging = root / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)
    for library in host.libraries:
        shutil.copyfile(library.resolve(), staging / library.name)  # the file, not a link
        (staging / library.name).chmod(0o755)
    try:
        staging.rename(final)
    except OSError:  # another jail made it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return final


def give_gpus(config: dict[str, Any], host: NvidiaHost) -> None:
    """Add the GPU devices to a rendered OCI `config` and allow exactly them in its device
    cgroup; the driver folder's bind (already among the mounts) may map its code."""
    linux = config["linux"]
    linux["devices"] = [
        *linux.get("devices", []),
        *(
            {"path": d.path, "type": "c", "major": d.major, "minor": d.minor, "fileMode": 0o666}
            for d in host.devices
        ),
    ]
    rules = linux.setdefault("resources", {}).setdefault("devices", [])
    rules.extend(
        {"allow": True, "type": "c", "major": d.major, "minor": d.minor, "access": "rw"}
        for d in host.devices
    )
    for mount in config["mounts"]:
        if mount["destination"] == DRIVER_DIR:
            mount["options"] = [o for o in mount["options"] if o != "noexec"]


def _device(path: Path) -> Device:
    info = path.stat()
    if not stat.S_ISCHR(info.st_mode):
        raise NoGpuError(f"{path} is not a character device")
    return Device(str(Path("/dev") / path.name), os.major(info.st_rdev), os.minor(info.st_rdev))


def _ldconfig() -> str:
    try:
        return subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NoGpuError(f"cannot read the linker cache (`ldconfig -p`): {exc}") from exc


def _driver_libraries(ldconfig: str) -> tuple[Path, ...]:
    found: dict[str, Path] = {}
    for line in ldconfig.splitlines():
        match = _LDCONFIG_LINE.match(line)
        if match is None or ("x86-64" not in match.group(2) and "64bit" not in match.group(2)):
            continue
        soname, path = match.group(1), Path(match.group(3))
        if soname.startswith(DRIVER_LIBRARIES) and soname not in found:
            found[soname] = path
    return tuple(found[name] for name in sorted(found))


def _version_of(cuda: Path) -> str:
    """The driver version: the real file's suffix (libcuda.so.1 -> libcuda.so.550.54.15)."""
    real = cuda.resolve().name
    version = real.removeprefix("libcuda.so.")
    return version if re.fullmatch(r"[0-9][0-9.]*", version) else "unknown"
