"""Attack family: argument races (time-of-check to time-of-use).

A checker that reads a pointer argument from the caller's memory and then lets the kernel
act on the same pointer can be raced: another thread rewrites the path between the check
and the use. seccomp itself never reads pointers; the one place the jail does is the chmod
guard (OP_CHMOD, a seccomp user-notification supervisor that answers CONTINUE for allowed
paths). Its check is a convenience on top of the real enforcement (a read-only root owned by
root), so winning the race must gain nothing. Likewise for open(): the jail never decides by
path, the mounts and file modes do, so flipping the path cannot open what they forbid.

Each script flips a ctypes buffer between an allowed path and a forbidden one in a Python
thread while the main thread calls libc with that buffer (ctypes releases the GIL during the
call, so on two cores the flip really lands mid-syscall).
"""

import ast

from cogbox.images.store import Image
from tests.attacks.harness import jail_python, stdout, text

RACE = """
import random, threading, time
ALLOWED = b"/home/work/mine.txt"
open(ALLOWED, "w").close()
path = ctypes.create_string_buffer(64)
stop = []
def flip():
    while not stop:
        ctypes.memmove(path, FORBIDDEN + b"\\0", len(FORBIDDEN) + 1)
        ctypes.memmove(path, ALLOWED + b"\\0", len(ALLOWED) + 1)
flipper = threading.Thread(target=flip)
flipper.start()
outcomes = {}
leaked = 0
calls = 0
deadline = time.time() + 6  # inside the policy's 10 s wall time
# At least 3000 calls, and on until every outcome in WANT was seen (or the deadline): the
# threads can fall into lockstep on some machines, so a random pause breaks their phase.
while time.time() < deadline and (calls < 3000 or not WANT <= set(outcomes)):
    calls += 1
    for _ in range(random.randrange(64)):
        pass
    ctypes.set_errno(0)
    result = CALL(path)
    code = ctypes.get_errno() if result < 0 else 0
    outcomes[code] = outcomes.get(code, 0) + 1
    if result >= 0 and OPENED:
        data = os.read(result, 64)
        os.close(result)
        leaked += data.startswith(b"root:")
stop.append(True)
flipper.join()
print("OUTCOMES %s" % sorted(outcomes.items()))
print("LEAKED %d" % leaked)
print("MODE %o" % (os.stat(FORBIDDEN).st_mode & 0o7777))
"""


def _outcomes(result_text: str) -> dict[int, int]:
    line = next(x for x in result_text.splitlines() if x.startswith("OUTCOMES "))
    return dict(ast.literal_eval(line.removeprefix("OUTCOMES ")))


def test_racing_the_chmod_guard_changes_no_file_outside_the_allowed_paths(
    python_image: Image,
) -> None:
    before = (python_image.rootfs / "etc/passwd").stat().st_mode & 0o7777
    code = (
        'FORBIDDEN = b"/etc/passwd"\nOPENED = False\nWANT = {0, 1}\n'  # 1: EPERM
        "CALL = lambda p: libc.chmod(p, 0o777)\n" + RACE
    )
    result = jail_python(python_image, code)
    out = stdout(result)
    outcomes = _outcomes(out)
    # Both paths were really tried: some chmods hit the allowed file and succeeded, the
    # rest were refused: EPERM from the guard, or EROFS from the read-only root when the
    # race was won (the guard checked the allowed path, the kernel then read /etc/passwd;
    # about a quarter of the calls on 2 cores). Winning it changed nothing.
    # (A path torn mid-copy may also fail with ENOENT or ENOTDIR.)
    assert outcomes.get(0, 0) > 0 and set(outcomes) - {0}, text(result)
    assert f"MODE {before:o}" in out, text(result)


def test_racing_open_never_reads_a_file_the_mounts_and_modes_forbid(python_image: Image) -> None:
    code = (
        'FORBIDDEN = b"/etc/shadow"\n'
        "OPENED = True\n"
        "WANT = {0, 13}\n"  # 13: EACCES
        "libc.open.restype = ctypes.c_int\n"
        "CALL = lambda p: libc.open(p, os.O_RDONLY)\n" + RACE
    )
    result = jail_python(python_image, code)
    out = stdout(result)
    outcomes = _outcomes(out)
    assert outcomes.get(0, 0) > 0 and outcomes.get(13, 0) > 0, text(result)  # 13: EACCES
    assert "LEAKED 0" in out, text(result)
