"""Helpers for kernel tests: a light policy, running code to its end, collecting output."""

from cogbox.jail.policy import Policy, parse_policy
from cogbox.kernel.events import Event, Finished, KernelDied, Stderr, Stdout
from cogbox.kernel.session import InputHandler, Session

# Makes ipykernel end the next request without a reply, once: a KeyboardInterrupt outside
# the code (in IPython's cell transform), as an interrupt that lands between execute_input
# and the code does. The kernel logs "KeyboardInterrupt caught in kernel" and goes idle.
NO_REPLY_ONCE = (
    "def _cogbox_stop(lines):\n"
    "    get_ipython().input_transformers_post.remove(_cogbox_stop)\n"
    "    raise KeyboardInterrupt\n"
    "get_ipython().input_transformers_post.append(_cogbox_stop)\n"
)


def small_policy(memory: str = "256m") -> Policy:
    """A light policy for tests: little memory, a small /home/work quota."""
    return parse_policy(
        f"limits:\n  memory: {memory}\n  workdir_quota: 64m\n  pids: 64\n", source="test policy"
    )


def run(
    session: Session,
    code: str,
    *,
    timeout: float | None = None,
    on_input: InputHandler | None = None,
) -> list[Event]:
    """Every event of one run; checks it ended with exactly one terminal event."""
    events = list(session.execute(code, timeout=timeout, on_input=on_input))
    assert isinstance(events[-1], Finished | KernelDied), events
    assert not any(isinstance(e, Finished | KernelDied) for e in events[:-1]), events
    return events


def stdout_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Stdout))


def stderr_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Stderr))
