"""pid 1 of a kernel's jail: starts the kernel, forwards signals to it, reaps orphans.

Run by the image's own interpreter (Python 2.7 in the cntk image, 3.x elsewhere), so this
file is plain Python 2/3 (no annotations, no f-strings). `cogbox.kernel.launch` copies it
into the session's runtime directory and runs `python /run/cogbox/init.py KERNEL-ARGV...`.

Why not run the kernel as pid 1 directly: pid 1 of a PID namespace never reaps orphans of
the user's code (they pile up against the pids limit), and it ignores any signal it has no
handler for. runc forwards the signals the host sends it (SIGINT for an interrupt) to pid 1;
this wrapper passes them on to the kernel's process group, and when the kernel ends it
exits with the kernel's status (128 + N when the kernel was killed by signal N, as the
memory cgroup's OOM killer does), so the jail ends with it.
"""

import errno
import os
import signal
import sys

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_kernel = [0]  # the kernel's pid once started (a list: assignable from the handler's scope)


def _forward(signum, frame):  # type: (int, object) -> None
    if _kernel[0] > 0:
        try:  # noqa: SIM105 (Python 2.7 has no contextlib.suppress)
            os.killpg(_kernel[0], signum)
        except OSError:
            pass


def main(argv):  # type: (list[str]) -> int
    if not argv:
        sys.stderr.write("usage: init.py PROGRAM [ARG...]\n")
        return 2
    for signum in FORWARDED:
        signal.signal(signum, _forward)
    pid = os.fork()
    if pid == 0:
        os.setsid()  # its own process group: an interrupt reaches the code's children too
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _kernel[0] = pid
    while True:
        try:
            child, status = os.wait()
        except OSError as exc:  # Python 2 does not retry a wait interrupted by a signal
            if exc.errno == errno.EINTR:
                continue
            return 1
        if child != pid:
            continue  # an orphan of the user's code, now reaped
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
