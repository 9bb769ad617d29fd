"""GPUs in the jail (`gpu: true`): discovery of the host's NVIDIA devices and driver, the
spec's devices and device-cgroup rules, and a refusal by name where there is no GPU. The
real check (a keras-cuda session sees the GPU through the jail) runs only on a GPU host."""

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from cogbox.images.store import Image
from cogbox.jail.gpu import (
    DRIVER_DIR,
    NoGpuError,
    driver_folder,
    find_gpus,
    give_gpus,
    require_gpus,
)
from cogbox.jail.launcher import JailError, JailSpec, run_jailed
from cogbox.jail.policy import PolicyError, parse_policy

HAS_GPU = Path("/dev/nvidiactl").exists() and Path("/dev/nvidia0").exists()
NO_GPU = (
    "no NVIDIA GPU on this host (/dev/nvidiactl, /dev/nvidia0): "
    "the keras-cuda check runs where one is lent"
)


def fake_host(tmp_path: Path) -> tuple[Path, str]:
    """A /dev with NVIDIA-named character devices (links to harmless ones) and an
    `ldconfig -p` listing driver libraries that exist."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name, target in (("nvidiactl", "null"), ("nvidia0", "zero"), ("nvidia-uvm", "full")):
        (dev / name).symlink_to(f"/dev/{target}")
    libs = tmp_path / "lib"
    libs.mkdir()
    (libs / "libcuda.so.550.54.15").write_bytes(b"\x7fELF cuda")
    (libs / "libcuda.so.1").symlink_to("libcuda.so.550.54.15")
    (libs / "libnvidia-ml.so.1").write_bytes(b"\x7fELF nvml")
    ldconfig = (
        "3 libs found in cache `/etc/ld.so.cache'\n"
        f"\tlibnvidia-ml.so.1 (libc6,x86-64) => {libs}/libnvidia-ml.so.1\n"
        f"\tlibcuda.so.1 (libc6,x86-64) => {libs}/libcuda.so.1\n"
        f"\tlibcuda.so.1 (libc6) => /usr/lib32/libcuda.so.1\n"
        f"\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6\n"
    )
    return dev, ldconfig


def test_the_host_gpus_devices_libraries_and_driver_version_are_found(tmp_path: Path) -> None:
    dev, ldconfig = fake_host(tmp_path)
    host = find_gpus(dev, ldconfig)
    assert host is not None
    assert [(d.path, d.major, d.minor) for d in host.devices] == [
        ("/dev/nvidiactl", 1, 3), ("/dev/nvidia-uvm", 1, 7), ("/dev/nvidia0", 1, 5)
    ]  # fmt: skip
    assert [p.name for p in host.libraries] == ["libcuda.so.1", "libnvidia-ml.so.1"]
    assert host.driver_version == "550.54.15"


def test_no_control_device_means_no_gpu_and_a_gpu_policy_is_refused_by_name(
    tmp_path: Path,
) -> None:
    assert find_gpus(tmp_path, "") is None
    with pytest.raises(NoGpuError, match=r"asks for the host's GPUs \(gpu: true\).*none"):
        require_gpus(tmp_path, "")


def test_devices_without_the_driver_library_are_an_error_naming_it(tmp_path: Path) -> None:
    dev, _ = fake_host(tmp_path)
    with pytest.raises(NoGpuError, match=r"no libcuda\.so\.1"):
        find_gpus(dev, "")


def test_driver_folder_holds_copies_not_links_and_is_made_once(tmp_path: Path) -> None:
    dev, ldconfig = fake_host(tmp_path)
    host = find_gpus(dev, ldconfig)
    assert host is not None
    folder = driver_folder(host, tmp_path / "data")
    cuda = folder / "libcuda.so.1"
    assert (folder.name, cuda.is_symlink(), cuda.read_bytes()) == (
        "driver-550.54.15", False, b"\x7fELF cuda"
    )  # fmt: skip
    assert driver_folder(host, tmp_path / "data") == folder


def test_the_spec_gets_exactly_the_gpu_devices_and_an_executable_driver_mount(
    tmp_path: Path,
) -> None:
    dev, ldconfig = fake_host(tmp_path)
    host = find_gpus(dev, ldconfig)
    assert host is not None
    config: dict[str, Any] = {
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}},
        "mounts": [{"destination": DRIVER_DIR, "options": ["bind", "noexec", "ro"]}],
    }
    give_gpus(config, host)
    rules = config["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}  # still deny-all first
    assert {(r["major"], r["minor"], r["access"]) for r in rules[1:]} == {
        (1, 3, "rw"), (1, 7, "rw"), (1, 5, "rw")
    }  # fmt: skip
    assert [d["path"] for d in config["linux"]["devices"]] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"
    ]  # fmt: skip
    assert config["mounts"][0]["options"] == ["bind", "ro"]


def test_gpu_is_a_policy_boolean_and_a_wrong_value_names_its_line() -> None:
    assert parse_policy("gpu: true\n", source="p.yml").gpu is True
    assert parse_policy("network: none\n", source="p.yml").gpu is False
    with pytest.raises(PolicyError, match=r"p.yml:2.*gpu"):
        parse_policy("network: none\ngpu: all\n", source="p.yml")


@pytest.mark.skipif(HAS_GPU, reason="this host has a GPU: the refusal cannot be shown here")
def test_a_gpu_policy_on_a_host_without_gpus_is_refused_by_name(python_image: Image) -> None:
    if shutil.which("runc") is None or os.geteuid() != 0:
        pytest.skip("the jail needs root and runc")
    policy = parse_policy("gpu: true\n", source="gpu.yml")
    with pytest.raises(JailError, match=r"gpu: true.*this host has none"):
        run_jailed(JailSpec(python_image, policy, ["/bin/true"]), timeout=30)


@pytest.mark.skipif(not HAS_GPU, reason=NO_GPU)
def test_a_keras_cuda_jail_sees_the_gpu_and_computes_on_it(tmp_path: Path) -> None:
    from tests.conftest import _built

    image = _built("keras-cuda")
    code = (
        "import jax, jax.numpy as jnp\n"
        "print('DEVICES', [d.platform for d in jax.devices()])\n"
        "x = jnp.ones((1024, 1024)); print('SUM', float((x @ x).sum()))\n"
    )
    policy = parse_policy(image.policy_path.read_text(), source=str(image.policy_path))
    result = run_jailed(JailSpec(image, policy, ["/usr/bin/python3", "-c", code]), timeout=300)
    out = result.stdout.decode()
    assert "DEVICES ['gpu']" in out or "DEVICES ['cuda']" in out, out + result.stderr.decode()
    assert f"SUM {1024.0**3:.1f}" in out, out
