"""Runs a batch command (Backend.AI's build/exec) as a process, from inside the kernel.

`Session.execute_batch` sends this file's source to the kernel, run in a namespace of its
own, followed by a call of `run_batch(build, exec)`. So this file is plain Python 2/3
(the cntk image's kernel is Python 2.7): no annotations, no f-strings.

Each command runs with `/bin/sh -c` in /home/work, in its own session (process group), with
`$COGBOX_PYTHON` set to the kernel's own interpreter (the image's `kernel.runtime_path`), its
stdout and stderr streamed to the kernel's as they come, so they reach the client as
ordinary output events. An interrupt (KeyboardInterrupt in the kernel) is passed on to the
command's whole process group as SIGINT, then SIGKILL after a grace period, and re-raised.
Returns `(stage, status)`: stage 0 = build, 1 = exec, the stage that ran last; status is the
exit status (128 + N when killed by signal N).
"""

import codecs
import errno
import os
import select
import signal
import subprocess
import sys
import time

try:  # noqa: SIM105 (Python 2.7 has no contextlib.suppress)
    from typing import Any  # noqa: F401 (for the type comments)
except ImportError:  # Python 2.7 without the typing backport
    pass

# cogbox.images.paths.WORKDIR: this file runs in the image, which cannot import cogbox.
WORKDIR = "/home/work"
KILL_GRACE_SECONDS = 2.0


def _spawn(command):  # type: (bytes) -> subprocess.Popen[bytes]
    devnull = open(os.devnull, "rb")  # noqa: SIM115 (closed below; 2.7 has no DEVNULL)
    options = {
        "shell": True,
        "cwd": WORKDIR,
        "stdin": devnull,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "close_fds": True,
        "env": dict(os.environ, COGBOX_PYTHON=sys.executable),
    }  # type: dict[str, Any]
    if sys.version_info[0] >= 3:  # noqa: UP036 (this file also runs on Python 2.7)
        options["start_new_session"] = True
    else:
        options["preexec_fn"] = os.setsid
    try:
        return subprocess.Popen(command, **options)
    finally:
        devnull.close()


def _signal_group(process, signum):  # type: (subprocess.Popen[bytes], int) -> None
    try:  # noqa: SIM105 (Python 2.7 has no contextlib.suppress)
        os.killpg(process.pid, signum)
    except OSError:
        pass


def _stop(process):  # type: (subprocess.Popen[bytes]) -> None
    _signal_group(process, signal.SIGINT)
    deadline = time.time() + KILL_GRACE_SECONDS
    while process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _stream(process):  # type: (subprocess.Popen[bytes]) -> None
    assert process.stdout is not None and process.stderr is not None
    targets = {
        process.stdout.fileno(): (sys.stdout, codecs.getincrementaldecoder("utf-8")("replace")),
        process.stderr.fileno(): (sys.stderr, codecs.getincrementaldecoder("utf-8")("replace")),
    }
    open_fds = list(targets)
    while open_fds:
        try:
            ready = select.select(open_fds, [], [])[0]
        except select.error as exc:  # noqa: UP024 (Python 2 does not retry an interrupted select)
            if exc.args[0] == errno.EINTR:
                continue
            raise
        for fd in ready:
            chunk = os.read(fd, 65536)
            stream, decoder = targets[fd]
            if not chunk:
                open_fds.remove(fd)
                text = decoder.decode(b"", True)
            else:
                text = decoder.decode(chunk)
            if text:
                stream.write(text)
                stream.flush()


def _run(command):  # type: (bytes) -> int
    process = _spawn(command)
    try:
        _stream(process)
        status = process.wait()
    except BaseException:
        _stop(process)
        raise
    finally:
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    return 128 - status if status < 0 else status


def _hold_output(hold):  # type: (bool) -> None
    """While a command runs, the kernel's IOPub socket waits for the host instead of
    dropping messages past its high-water mark (ZMQ_XPUB_NODROP): a flood then slows the
    command down (its pipe fills) rather than losing output, or the run's final `idle`
    status, on the way to the session's log. Set in the IOPub thread, which owns the
    socket; what waits meanwhile is in the kernel's memory, under the jail's limit."""
    try:
        import zmq
        from IPython import get_ipython

        thread = get_ipython().kernel.iopub_thread
        option = zmq.XPUB_NODROP
        thread.schedule(lambda: thread.socket.setsockopt(option, 1 if hold else 0))
    except Exception:  # not an ipykernel, or too old a zmq: output may drop as before
        pass


def run_batch(build, exec_command):  # type: (bytes | None, bytes) -> tuple[int, int]
    _hold_output(True)
    try:
        if build is not None:
            status = _run(build)
            if status != 0:
                return (0, status)
        return (1, _run(exec_command))
    finally:
        _hold_output(False)
