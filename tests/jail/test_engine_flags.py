"""`cogbox policy render --format docker-run`: the engine flags that carry the policy's limits."""

import shlex

from click.testing import CliRunner

from cogbox.cli.policy import policy
from cogbox.config import REPO_IMAGES_DIR
from cogbox.jail.engine_flags import not_enforced, render_engine_flags
from cogbox.jail.policy import load_policy

CNTK_POLICY = REPO_IMAGES_DIR / "cntk" / "policy.yml"


def _flags() -> list[str]:
    return render_engine_flags(load_policy(CNTK_POLICY), seccomp_profile="/p/seccomp.json")


def test_flags_carry_memory_cpus_pids_and_open_files() -> None:
    assert {
        "--memory=4294967296",
        "--memory-swap=4294967296",
        "--cpus=2",
        "--pids-limit=32",
        "--ulimit=nofile=1024:1024",
        "--ulimit=fsize=2147483648:2147483648",
    } <= set(_flags())


def test_flags_lock_the_container_down() -> None:
    assert {
        "--read-only",
        "--tmpfs=/tmp:rw,nosuid,nodev,size=1073741824,mode=1777",
        "--network=none",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--security-opt=seccomp=/p/seccomp.json",
        "--user=1000:1000",
    } <= set(_flags())


def test_flags_set_nproc_explicitly_for_engines_without_cap_sys_resource() -> None:
    assert any(flag.startswith("--ulimit=nproc=") for flag in _flags())


def test_what_an_engine_cannot_enforce_is_named() -> None:
    gaps = " ".join(not_enforced(load_policy(CNTK_POLICY)))
    assert "chmod guard" in gaps and "workdir_quota" in gaps and "wall_time" in gaps


def test_cli_prints_the_flags_as_shell_words() -> None:
    result = CliRunner().invoke(
        policy,
        ["render", str(CNTK_POLICY), "--format", "docker-run", "--seccomp-profile", "/p/s.json"],
    )
    assert result.exit_code == 0, result.output
    assert shlex.split(result.stdout.replace("\\\n", " "))[-1] == "--security-opt=seccomp=/p/s.json"
    assert "chmod guard" in result.stderr
