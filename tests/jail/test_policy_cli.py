"""`cogbox policy check|render`: a thin CLI over the policy loader and renderers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cogbox.cli.policy import policy
from cogbox.config import REPO_IMAGES_DIR
from cogbox.images.plan import JAIL_INIT
from cogbox.jail.init import INIT_ARGS

CNTK_POLICY = str(REPO_IMAGES_DIR / "cntk" / "policy.yml")


def test_check_prints_a_summary_and_exits_0() -> None:
    result = CliRunner().invoke(policy, ["check", CNTK_POLICY])
    assert (result.exit_code, f"{CNTK_POLICY}: ok" in result.output) == (0, True)


@pytest.mark.slow  # a CLI process: ~1.5 s
def test_check_of_a_broken_file_exits_2_and_names_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "policy.yml"
    broken.write_text("max_child_procs: 32\nlimits:\n  memory: 4 gigs\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cogbox.cli import main; main()",
            "policy",
            "check",
            str(broken),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert f"error: {broken}:3: limits.memory:" in result.stderr


def test_render_oci_prints_a_config_json() -> None:
    result = CliRunner().invoke(policy, ["render", "--format", "oci", CNTK_POLICY])
    spec = json.loads(result.stdout)
    assert (spec["root"]["path"], spec["process"]["args"]) == (
        "rootfs",
        [JAIL_INIT, *INIT_ARGS, "/bin/sh"],
    )


def test_render_oci_runs_the_given_args_under_the_jails_init() -> None:
    result = CliRunner().invoke(policy, ["render", CNTK_POLICY, "--", "python", "-V"])
    assert json.loads(result.stdout)["process"]["args"] == [JAIL_INIT, *INIT_ARGS, "python", "-V"]


def test_render_oci_says_where_memory_and_pids_are_limited() -> None:
    result = CliRunner().invoke(policy, ["render", "--format", "oci", CNTK_POLICY])
    assert "memory" not in json.loads(result.stdout)["linux"]["resources"]
    assert "set on the launcher's parent cgroup" in result.stderr


def test_render_docker_prints_the_seccomp_profile() -> None:
    result = CliRunner().invoke(policy, ["render", "--format", "docker", CNTK_POLICY])
    assert json.loads(result.stdout)["architectures"] == ["SCMP_ARCH_X86_64"]


def test_render_kubernetes_names_the_profile_after_the_image() -> None:
    result = CliRunner().invoke(policy, ["render", "--format", "kubernetes", CNTK_POLICY])
    assert json.loads(result.stdout)["seccompProfile"]["path"] == "cogbox/cntk.json"
