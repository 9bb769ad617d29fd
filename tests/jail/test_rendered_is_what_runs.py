"""`cogbox policy render --format oci` prints the config.json the launcher writes to a bundle."""

import json
import os
from typing import Any

import pytest
from click.testing import CliRunner

from cogbox.cli.policy import policy as policy_cli
from cogbox.images.store import Image
from cogbox.jail.launcher import DEVNULL, Jail, JailSpec
from cogbox.jail.policy import load_policy

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root (runc, cgroups, mounts)"),
    pytest.mark.slow,
]

ARGV = ["/usr/bin/python3", "-c", "import time; time.sleep(60)"]


def without_start_time_values(config: dict[str, Any]) -> dict[str, Any]:
    """The config less what only a start knows: the image's env, the jail's cgroup and the
    chmod guard's socket (the render's stand-ins for them are named in its --help)."""
    config = json.loads(json.dumps(config))
    config["process"].pop("env")
    config["linux"].pop("cgroupsPath", None)
    config["linux"]["seccomp"].pop("listenerPath", None)
    return config


def test_the_rendered_oci_config_is_the_one_the_launcher_writes(python_image: Image) -> None:
    jail = Jail()
    try:
        jail.start(
            JailSpec(python_image, load_policy(python_image.policy_path), ARGV), stdin=DEVNULL
        )
        assert jail.bundle is not None and jail.identity is not None
        written = json.loads((jail.bundle / "config.json").read_text())
        workdir = next(m["source"] for m in written["mounts"] if m["destination"] == "/home/work")
        result = CliRunner().invoke(
            policy_cli,
            [
                "render",
                str(python_image.policy_path),
                "--rootfs", str(python_image.rootfs),
                "--workdir", workdir,
                "--identity-slot", str(jail.identity.slot),
                "--", *ARGV,
            ],
        )  # fmt: skip
    finally:
        jail.cleanup()
    assert result.exit_code == 0, result.output
    rendered = json.loads(result.stdout)
    assert without_start_time_values(rendered) == without_start_time_values(written)
