"""The OCI runtimes a jail can run under, apart from the launcher so the CLI's options can name
them without importing it (`cogbox --help` stays fast), and the command line that starts them."""

from pathlib import Path

RUNTIMES = ("runc", "runsc")


def runtime_command(runtime: str, state_root: Path, bundle: Path, network: str) -> list[str]:
    """The start of every `runc`/`runsc` command for the jail whose bundle is `bundle`."""
    command = [
        runtime,
        "--root", str(state_root),
        "--log", str(bundle / "runtime.log"),
        "--log-format", "json",
    ]  # fmt: skip
    if runtime == "runsc":
        # gVisor brings its own network stack ("none": loopback only), and applies the
        # policy's seccomp whitelist inside its kernel only when asked to.
        command.append("--network=host" if network == "host" else "--network=none")
        command.append("--oci-seccomp")
        # A kernel's ZeroMQ sockets must be real sockets on the host side of its runtime
        # folder ("create" only: the jail may not connect to host sockets it finds, and
        # the host dials only sockets it proved, as under runc).
        command.append("--host-uds=create")
    return command
