"""Line editing, history and Tab completion for `cogbox shell` (GNU readline, stdlib).

Only for a person at a terminal: with stdin a pipe the shell reads plain lines, as python's
own REPL does. History persists in `~/.cogbox_history` (`COGBOX_SHELL_HISTORY` names another
file; empty: none), at most `HISTORY_LINES` lines. Completion asks the session's kernel
(the names and attributes of its live namespace) when the shell has one; through a service,
whose API serves no completion, it offers Python's keywords, builtins and the names already
typed in this shell.
"""

import builtins
import contextlib
import keyword
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

HISTORY_LINES = 5000
# '.' splits words so `np.ar<Tab>` completes `ar`; the kernel's matches are cut to fit.
_DELIMS = " \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?."
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# (code, cursor) -> (matches, cursor_start): what the kernel would put at code[cursor_start:]
KernelComplete = Callable[[str, int], tuple[list[str], int]]


def history_file() -> Path | None:
    configured = os.environ.get("COGBOX_SHELL_HISTORY")
    if configured is not None:
        return Path(configured) if configured else None
    return Path.home() / ".cogbox_history"


@contextlib.contextmanager
def line_editing(complete: KernelComplete | None) -> Iterator["Completer | None"]:
    """Readline on for the `with` block (history loaded, then saved at the end); yields
    the completer (None without a terminal or without readline)."""
    readline = _readline()
    if readline is None:
        yield None
        return
    history = history_file()
    if history is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
    readline.set_history_length(HISTORY_LINES)
    completer = Completer(complete, readline)
    readline.set_completer_delims(_DELIMS)
    readline.set_completer(completer)
    # libedit (macOS) and GNU readline spell the Tab binding differently.
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    try:
        yield completer
    finally:
        readline.set_completer(None)
        if history is not None:
            with contextlib.suppress(OSError):
                readline.write_history_file(history)


def _readline() -> ModuleType | None:
    if not os.isatty(0):
        return None
    try:
        import readline
    except ImportError:
        return None
    return readline


class Completer:
    """readline's completer: `__call__(text, state)` gives the state-th match of `text`."""

    def __init__(self, complete: KernelComplete | None, readline: ModuleType) -> None:
        self._complete = complete
        self._readline = readline
        self._matches: list[str] = []
        self.seen: set[str] = set()

    def note(self, cell: str) -> None:
        """Remember the names of a cell that ran (for completion without a kernel)."""
        self.seen.update(_NAME.findall(cell))

    def __call__(self, text: str, state: int) -> str | None:
        if state == 0:
            line = self._readline.get_line_buffer()
            begin, end = self._readline.get_begidx(), self._readline.get_endidx()
            try:
                self._matches = self.matches(line, begin, end, text)
            except Exception:  # a completer that raises is silently disabled by readline
                self._matches = []
        return self._matches[state] if state < len(self._matches) else None

    def matches(self, line: str, begin: int, end: int, text: str) -> list[str]:
        """What can replace `line[begin:end]` (== `text`)."""
        if self._complete is None:
            names = {*keyword.kwlist, *dir(builtins), *self.seen}
            return sorted(n for n in names if n.startswith(text))
        found, start = self._complete(line, end)
        return fit_matches(found, start, line, begin)


def fit_matches(matches: list[str], start: int, line: str, begin: int) -> list[str]:
    """The kernel's matches (replacing `line[start:]`) cut to replace readline's word,
    which begins at `begin`: `os.pa` -> kernel `os.path` from 0 -> readline `path` from 3."""
    prefix = line[start:begin] if start <= begin else ""
    fitted = []
    for match in matches:
        if start > begin:
            match = line[begin:start] + match
        elif not match.startswith(prefix):
            continue
        fitted.append(match[len(prefix) :])
    return list(dict.fromkeys(fitted))
