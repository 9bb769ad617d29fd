"""Names and defaults the CLI's options show (environment variables, the default session cap),
in a module that imports nothing, so that `cogbox --help` stays fast."""

ENDPOINT_ENVS = ("COGBOX_ENDPOINT", "BACKEND_ENDPOINT")
ACCESS_KEY_ENVS = ("COGBOX_ACCESS_KEY", "BACKEND_ACCESS_KEY")
SECRET_KEY_ENVS = ("COGBOX_SECRET_KEY", "BACKEND_SECRET_KEY")
DEFAULT_MAX_SESSIONS = 8  # a new keypair's concurrent sessions
