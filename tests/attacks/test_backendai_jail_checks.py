"""Attack family: Backend.AI's own jail checks, on the cntk image under its shipped policy.

Backend.AI's image tests ran these against every kernel image: chmod escapes out of the
work directory by `..`, `./..` and trailing `/.` raise PermissionError, chmod of the work
directory itself works, `random.randint` works (getrandom is allowed), threads start, and a
fork bomb stops at `max_child_procs`. Here they run on the cntk image (Python 2.7, where
PermissionError is an OSError with errno EPERM or EACCES) with
`load_policy(cntk_image.policy_path)` unchanged, and CNTK itself must still compute.
"""

import pytest

from cogbox.images.store import Image
from cogbox.jail.launcher import ExitReason
from cogbox.jail.policy import Policy
from tests.attacks.harness import FORK_BOMB, jail_python, stdout, text
from tests.seed import CNTK_MINUS

# What Python 3 raises as PermissionError: EPERM or EACCES.
PERMISSION_ERRNOS = ("[Errno 1]", "[Errno 13]")

# Backend.AI's forms (its old user was `sorna`; `x` here), plus existing targets.
CHMOD_ESCAPES = [
    "/home/work/../x",
    "/home/work/./../x",
    "/home/x/.",
    "/home/.",
    "/home/work/test/../../x/",
    "/home/work/../../etc/passwd",
]


def _chmod_script(paths: list[str]) -> str:
    lines = ['os.mkdir("/home/work/test")']
    for path in paths:
        lines += [
            f"before = os.stat({path!r}).st_mode if os.path.exists({path!r}) else None",
            f"attempt({'chmod ' + path!r}, lambda: os.chmod({path!r}, 0o700))",
            f"after = os.stat({path!r}).st_mode if os.path.exists({path!r}) else None",
            f"print('UNCHANGED {path} %s' % (before == after))",
        ]
    return "\n".join(lines)


@pytest.mark.parametrize("path", CHMOD_ESCAPES)
def test_chmod_outside_workdir_is_refused(
    cntk_image: Image, cntk_policy: Policy, path: str
) -> None:
    result = jail_python(cntk_image, _chmod_script([path]), policy=cntk_policy)

    out = stdout(result)
    assert f"BLOCKED chmod {path}: OSError" in out, text(result)
    assert f"UNCHANGED {path} True" in out


def test_chmod_escapes_raise_permission_error_as_backendai_expects(
    cntk_image: Image, cntk_policy: Policy
) -> None:
    # Backend.AI's image tests expect exactly PermissionError; code written against them
    # (`except PermissionError`) depends on it.
    result = jail_python(cntk_image, _chmod_script(CHMOD_ESCAPES), policy=cntk_policy)

    out = stdout(result)
    wrong = []
    for path in CHMOD_ESCAPES:
        line = out.split(f"BLOCKED chmod {path}: ")[1].splitlines()[0] if path in out else "?"
        if not any(code in line for code in PERMISSION_ERRNOS):
            wrong.append(f"{path}: {line}")
    assert not wrong, "refused, but not with PermissionError:\n  " + "\n  ".join(wrong)


def test_chmod_of_the_workdir_itself_works(cntk_image: Image, cntk_policy: Policy) -> None:
    code = """
attempt("chmod workdir", lambda: os.chmod("/home/work", 0o700))
print("MODE %o" % (os.stat("/home/work").st_mode & 0o777))
"""
    result = jail_python(cntk_image, code, policy=cntk_policy)

    assert "ALLOWED chmod workdir: None" in stdout(result), text(result)
    assert "MODE 700" in stdout(result)


def test_random_randint_works(cntk_image: Image, cntk_policy: Policy) -> None:
    code = "import random\nprint('RANDOM %d' % random.randint(0, 0))"
    result = jail_python(cntk_image, code, policy=cntk_policy)

    assert "RANDOM 0" in stdout(result), text(result)


def test_threads_start(cntk_image: Image, cntk_policy: Policy) -> None:
    code = """
import threading
done = []
threads = [threading.Thread(target=done.append, args=(n,)) for n in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("THREADS RAN %d" % len(done))
"""
    result = jail_python(cntk_image, code, policy=cntk_policy)

    assert "THREADS RAN 4" in stdout(result), text(result)


def test_fork_bomb_stops_at_max_child_procs(cntk_image: Image, cntk_policy: Policy) -> None:
    assert cntk_policy.max_child_procs == 32
    result = jail_python(cntk_image, FORK_BOMB, policy=cntk_policy)

    out = stdout(result)
    assert "BLOCKED fork bomb: OSError [Errno 11] Resource temporarily unavailable" in out, text(
        result
    )
    assert int(out.split("FORKED ")[1].split()[0]) < 32
    assert result.exit.reason == ExitReason.PIDS_LIMIT, text(result)
    assert "pids limit 32" in result.exit.message


def test_cntk_still_computes_under_the_policy(cntk_image: Image, cntk_policy: Policy) -> None:
    result = jail_python(cntk_image, CNTK_MINUS, policy=cntk_policy, timeout=120)

    assert "[-3. -3. -3.]" in stdout(result), text(result)
    assert result.exit.reason == ExitReason.EXITED
