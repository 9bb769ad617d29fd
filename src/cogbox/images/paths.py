"""Paths inside every cogbox image and the jails that run it: the one place that names them.

Host paths (a jail's bundle, the identity slots under the host's /run/cogbox) live with the
code that owns them. Scripts that run inside an image with the image's own Python (such as
kernel/batch_runner.py, Python 2.7 in the cntk image) keep literals: they cannot import this.
"""

# The work user's home: the session's files, bound from the host (jail/workdir.py).
WORKDIR = "/home/work"
# A tmpfs per jail (policy `limits.tmp_size`).
TMPDIR = "/tmp"
# The kernel's runtime folder (connection file, ZeroMQ sockets), bound per jail.
JAIL_RUNTIME_DIR = "/run/cogbox"
# The mount point of the jail's init (tini, bound read-only from the host).
JAIL_INIT = "/usr/sbin/cogbox-init"
# The image's own jail policy, where Backend.AI's images keep theirs.
POLICY_PATH = "/etc/backend.ai/jail/policy.yml"
