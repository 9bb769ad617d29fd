"""policy.yml: Backend.AI's format is accepted, every value is enforced or refused by line."""

from pathlib import Path

import pytest

from cogbox.config import REPO_IMAGES_DIR
from cogbox.errors import CogboxError
from cogbox.jail.policy import (
    DEFAULT_LIMITS,
    DEFAULT_PRESERVED_ENV_KEYS,
    PolicyError,
    default_policy,
    load_policy,
    parse_policy,
)
from cogbox.jail.syscalls import DEFAULT_ALLOWED_SYSCALLS

BACKEND_AI_CNTK_POLICY = """\
whitelist_paths:
  OP_OPEN: ["*"]
  OP_ACCESS: ["*"]
  OP_EXEC: ["*"]
  OP_STAT: ["*"]
  OP_CHMOD: ["/home/work/*", "/tmp/*"]
exec_allowance: -1
fork_allowance: -1
max_child_procs: 32
extra_envs: {}
preserved_env_keys:
  - HOME
  - PATH
  - LANG
  - USER
  - SHELL
  - TERM
  - LD_LIBRARY_PATH
  - LD_PRELOAD
  - PYTHONPATH
  - PYTHONUNBUFFERED
  - MPLCONFIGDIR
  - OPENBLAS_NUM_THREADS
allowed_syscalls: []
diff_to_default: true
"""


def problem(text: str) -> str:
    """The message of the PolicyError that `text` raises, as loaded from `policy.yml`."""
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="policy.yml")
    return str(caught.value)


# ---------------------------------------------------------------- Backend.AI's format


def test_backend_ai_cntk_policy_loads_unchanged() -> None:
    policy = parse_policy(BACKEND_AI_CNTK_POLICY)
    assert policy.whitelist_paths["OP_CHMOD"] == ("/home/work/*", "/tmp/*")
    assert policy.limits.pids == 32
    assert "LD_PRELOAD" in policy.preserved_env_keys
    assert policy.diff_to_default is True


def test_repository_image_policies_load() -> None:
    for name in ("cntk", "python"):
        assert load_policy(REPO_IMAGES_DIR / name / "policy.yml").network == "none"


def test_empty_policy_is_the_default_policy() -> None:
    assert parse_policy("", source="<default policy>") == default_policy()


def test_diff_to_default_merges_lists_with_defaults() -> None:
    policy = parse_policy(
        "diff_to_default: true\nallowed_syscalls: [mbind]\npreserved_env_keys: [MPLCONFIGDIR]\n"
    )
    assert set(policy.allowed_syscalls) == DEFAULT_ALLOWED_SYSCALLS | {"mbind"}
    assert policy.preserved_env_keys == (*DEFAULT_PRESERVED_ENV_KEYS, "MPLCONFIGDIR")


def test_without_diff_to_default_given_lists_replace_defaults() -> None:
    policy = parse_policy("allowed_syscalls: [read, write, exit_group]\npreserved_env_keys: [PATH]")
    assert policy.allowed_syscalls == ("exit_group", "read", "write")
    assert policy.preserved_env_keys == ("PATH",)


def test_omitted_lists_keep_their_defaults() -> None:
    policy = parse_policy("diff_to_default: false\nmax_child_procs: 8\n")
    assert set(policy.allowed_syscalls) == DEFAULT_ALLOWED_SYSCALLS
    assert policy.preserved_env_keys == DEFAULT_PRESERVED_ENV_KEYS


def test_extra_envs_values_become_strings() -> None:
    assert parse_policy("extra_envs: {OMP_NUM_THREADS: 2}").extra_envs == {"OMP_NUM_THREADS": "2"}


# ---------------------------------------------------------------- errors name file and line


def test_unknown_field_error_names_file_line_and_field() -> None:
    message = problem("max_child_procs: 8\nmax_childprocs: 9\n")
    assert "policy.yml:2: max_childprocs: unknown field" in message


def test_unknown_nested_field_names_its_line() -> None:
    assert "policy.yml:3: limits.mem: unknown field" in problem(
        "limits:\n  memory: 1g\n  mem: 2g\n"
    )


def test_unknown_whitelist_operation_is_refused() -> None:
    assert "policy.yml:2: whitelist_paths.OP_WRITE" in problem(
        'whitelist_paths:\n  OP_WRITE: ["*"]'
    )


def test_bad_size_names_line_field_and_value() -> None:
    message = problem("network: none\nlimits:\n  memory: 2 gigs\n")
    assert "policy.yml:3: limits.memory:" in message
    assert "'2 gigs'" in message


@pytest.mark.parametrize(
    ("written", "expected"),
    [("2g", 2 << 30), ("512m", 512 << 20), ("1.5GiB", 3 << 29), ("4096", 4096), (8192, 8192)],
)
def test_sizes_accept_binary_suffixes_and_integers(written: object, expected: int) -> None:
    assert parse_policy(f"limits: {{memory: {written}}}").limits.memory_bytes == expected


@pytest.mark.parametrize("written", ["0", "-1g", "true", "null", "unlimited"])
def test_memory_limit_must_be_a_positive_size(written: str) -> None:
    assert "policy.yml:1: limits.memory:" in problem(f"limits: {{memory: {written}}}")


def test_time_limits_and_workdir_quota_may_be_unlimited() -> None:
    limits = parse_policy(
        "limits: {wall_time_seconds: unlimited, cpu_time_seconds: null, workdir_quota: null}"
    ).limits
    assert (limits.wall_time_seconds, limits.cpu_time_seconds, limits.workdir_quota_bytes) == (
        None,
        None,
        None,
    )


def test_limits_not_written_keep_their_defaults() -> None:
    limits = parse_policy("limits: {memory: 4g}").limits
    assert limits.model_copy(update={"memory_bytes": DEFAULT_LIMITS.memory_bytes}) == DEFAULT_LIMITS


def test_duplicate_key_is_an_error_naming_the_second_line() -> None:
    assert "policy.yml:3: max_child_procs: is given twice" in problem(
        "max_child_procs: 8\nnetwork: none\nmax_child_procs: 9\n"
    )


def test_yaml_syntax_error_names_the_line() -> None:
    assert problem("network: none\nlimits: {memory: [\n").startswith("policy.yml:3: not valid YAML")


def test_policy_must_be_a_mapping() -> None:
    assert "policy.yml:1: a policy must be a mapping" in problem("- OP_OPEN\n")


def test_every_problem_is_reported_at_once() -> None:
    message = problem("exec_allowance: 3\nfork_allowance: 2\nallowed_syscalls: [nope]\n")
    assert "3 problems" in message
    assert all(f"policy.yml:{line}:" in message for line in (1, 2, 3))


def test_missing_file_error_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.yml"):
        load_policy(tmp_path / "missing.yml")


def test_policy_error_is_a_user_facing_cogbox_error() -> None:
    assert issubclass(PolicyError, CogboxError)


# ---------------------------------------------------------------- unenforceable values


@pytest.mark.parametrize("value", [0, 1, 100])
def test_exec_allowance_counts_are_refused(value: int) -> None:
    message = problem(f"exec_allowance: {value}\n")
    assert "policy.yml:1: exec_allowance:" in message
    assert "ptrace" in message


@pytest.mark.parametrize("value", [1, 10])
def test_fork_allowance_counts_are_refused(value: int) -> None:
    message = problem(f"fork_allowance: {value}\n")
    assert "policy.yml:1: fork_allowance:" in message
    assert "max_child_procs" in message


def test_fork_allowance_zero_means_threads_only() -> None:
    assert parse_policy("fork_allowance: 0").forks_allowed is False


def test_max_child_procs_becomes_the_pids_limit() -> None:
    assert parse_policy("max_child_procs: 32").limits.pids == 32


def test_max_child_procs_must_be_positive() -> None:
    assert "policy.yml:1: max_child_procs:" in problem("max_child_procs: -1")


def test_max_child_procs_conflicting_with_limits_pids_is_refused() -> None:
    assert "conflicts with limits.pids" in problem("max_child_procs: 32\nlimits: {pids: 64}\n")


@pytest.mark.parametrize("op", ["OP_OPEN", "OP_ACCESS", "OP_STAT"])
def test_path_rules_for_open_access_stat_are_refused_naming_landlock(op: str) -> None:
    message = problem(f'whitelist_paths:\n  {op}: ["/home/work/*"]\n')
    assert f"policy.yml:2: whitelist_paths.{op}[0]: '/home/work/*' cannot be enforced" in message
    assert "Landlock" in message


def test_chmod_outside_the_writable_mounts_is_refused() -> None:
    message = problem('whitelist_paths:\n  OP_CHMOD: ["/home/work/*", "/tmp/*", "/etc/*"]\n')
    assert "whitelist_paths.OP_CHMOD[2]: '/etc/*' cannot be enforced" in message


def test_chmod_rules_must_cover_both_writable_mounts() -> None:
    message = problem('whitelist_paths:\n  OP_CHMOD: ["/home/work/*"]\n')
    assert "chmod under /tmp cannot be denied" in message


def test_exec_rules_name_the_mounts_that_allow_exec() -> None:
    policy = parse_policy('whitelist_paths:\n  OP_EXEC: ["/tmp/*"]\n')
    assert (policy.exec_allowed_at("/tmp"), policy.exec_allowed_at("/home/work")) == (True, False)


def test_image_root_always_allows_exec() -> None:
    assert parse_policy("whitelist_paths: {OP_EXEC: []}").exec_allowed_at("/")


def test_exec_rule_for_a_directory_inside_a_mount_is_refused() -> None:
    message = problem('whitelist_paths:\n  OP_EXEC: ["/usr/bin/*"]\n')
    assert "whitelist_paths.OP_EXEC[0]: '/usr/bin/*' cannot be enforced" in message


def test_exec_rule_may_name_a_readonly_bind() -> None:
    policy = parse_policy(
        "whitelist_paths: {OP_EXEC: ['/opt/tools/*']}\n"
        "mounts: {readonly_binds: [{source: /srv/tools, destination: /opt/tools}]}\n"
    )
    assert policy.exec_allowed_at("/opt/tools")


# ---------------------------------------------------------------- cogbox's extensions


def test_network_defaults_to_none() -> None:
    assert default_policy().network == "none"


def test_network_accepts_only_none_or_host() -> None:
    assert "policy.yml:1: network:" in problem("network: bridge")


def test_readonly_bind_paths_must_be_absolute_without_dotdot() -> None:
    message = problem(
        "mounts:\n  readonly_binds:\n"
        "    - {source: data, destination: /data}\n"
        "    - {source: /srv/data, destination: /data/../etc}\n"
    )
    assert "policy.yml:3: mounts.readonly_binds[0].source:" in message
    assert "policy.yml:4: mounts.readonly_binds[1].destination:" in message


@pytest.mark.parametrize("destination", ["/", "/proc/self", "/home/work", "/tmp", "/dev/shm"])
def test_readonly_bind_cannot_replace_a_jail_mount(destination: str) -> None:
    message = problem(f"mounts: {{readonly_binds: [{{source: /srv, destination: {destination}}}]}}")
    assert "one of the jail's own mounts" in message


def test_default_policy_is_bounded_in_memory_pids_files_and_tmp() -> None:
    limits = default_policy().limits
    assert all(
        value is not None and value > 0
        for value in (limits.memory_bytes, limits.pids, limits.nofile, limits.tmp_size_bytes)
    )


@pytest.mark.parametrize("source", ["/", "/run/docker.sock", "/var/run", "/proc", "/etc"])
def test_readonly_bind_cannot_expose_host_control_files(source: str) -> None:
    message = problem(f"mounts: {{readonly_binds: [{{source: {source}, destination: /data}}]}}")
    assert "policy.yml:1: mounts.readonly_binds[0].source:" in message
