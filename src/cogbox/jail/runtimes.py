"""The OCI runtimes a jail can run under, apart from the launcher so the CLI's options can name
them without importing it (`cogbox --help` stays fast)."""

RUNTIMES = ("runc", "runsc")
