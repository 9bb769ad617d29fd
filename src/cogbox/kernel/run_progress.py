"""What one run's kernel messages amount to, free of any I/O: the one reading of a run's
replies, statuses, input requests and output, shared by the session's blocking loop and the
agent's asyncio loop (`cogbox.kernel.loop_run`)."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cogbox.kernel.events import Error, Event, Finished, InputRequest
from cogbox.kernel.messages import output_event
from cogbox.kernel.output_cap import OutputCap
from cogbox.kernel.run_request import RunRequest, timeout_finished
from cogbox.kernel.session_state import AskedInput, PendingRun

# ipykernel sends a request's reply, then its idle status (on another socket). An idle status
# still unanswered this long after, with nothing more coming, is a request the kernel ended
# without a reply: a KeyboardInterrupt outside the code (an interrupt that lands between
# execute_input and the code, which ipykernel logs as "KeyboardInterrupt caught in kernel").
REPLY_AFTER_IDLE_S = 1.0
_NO_REPLY = "the kernel ended the request without a reply (an exception in the kernel itself)"


@dataclass
class RunProgress:
    """One run so far: fed the messages whose parent is the run's request (`take`), it
    gives the events to pass on, and knows when the run is over: its reply and its idle
    status both arrived, or the idle status alone and nothing since (told by `quiet`)."""

    request: RunRequest
    cap: OutputCap
    on_begun: Callable[[], None]  # the kernel began the code (its execute_input)
    tap: Callable[[Event], None] | None = None  # sees every output event before the cap
    pending: PendingRun | None = None  # a persisted run: its input requests are recorded
    save: Callable[[PendingRun], None] = lambda run: None
    interrupted: Callable[[], bool] = lambda: False  # an interrupt reached the kernel
    reply: dict[str, Any] | None = None
    idle: bool = False
    idle_at: float | None = None
    unanswered: bool = False  # the kernel ended the request without a reply
    count: int | None = None  # the execution count its execute_input gave
    passed: int = 0  # events given so far: where a re-attaching owner puts an InputRequest

    @property
    def over(self) -> bool:
        return self.idle and (self.reply is not None or self.unanswered)

    def quiet(self, now: float) -> None:
        """A round of receiving brought nothing: an idle status long without its reply
        ends the run (waiting on would hang it, and the session, for good)."""
        if self.reply is None and self.idle_at is not None:
            self.unanswered = now - self.idle_at > REPLY_AFTER_IDLE_S

    def take(self, channel: str, kind: str, content: dict[str, Any]) -> list[Event]:
        """The events one message of the run (on `channel`, of type `kind`) gives."""
        if channel == "shell":
            if kind == "execute_reply":
                self.reply = content
            return []
        if channel == "stdin":
            if kind != "input_request":
                return []
            asked = InputRequest(str(content.get("prompt", "")), bool(content.get("password")))
            if self.pending is not None:  # recorded before anyone sees it
                self.pending.asked.append(AskedInput(self.passed, asked.prompt, asked.password))
                self.save(self.pending)
            return self._passed([asked])
        if kind == "status":
            if not self.idle and content.get("execution_state") == "idle":
                self.idle, self.idle_at = True, time.monotonic()
            return []
        if kind == "execute_input":
            self.count = content.get("execution_count")
            self.on_begun()
        event = output_event(kind, content)
        if event is not None and self.tap is not None:
            self.tap(event)
        return self._passed(list(self.cap.admit(event)))

    def finish(self, interrupted: bool, timeout: float | None) -> list[Event]:
        """The last events of a run that is `over`, its `Finished` last (`interrupted`: by
        its time limit)."""
        if self.reply is None:
            return self._unanswered(interrupted, timeout)
        if interrupted:
            return [timeout_finished(self.reply.get("execution_count"), timeout)]
        return [self.request.finish(self.reply)]

    def _unanswered(self, interrupted: bool, timeout: float | None) -> list[Event]:
        if interrupted:
            return [timeout_finished(self.count, timeout)]
        if not self.interrupted():
            return [Finished("error", self.count, _NO_REPLY)]
        stopped = Error("KeyboardInterrupt", "interrupted outside the code: no reply came")
        if self.tap is not None:
            self.tap(stopped)
        return [*self._passed([stopped]), Finished("error", self.count)]

    def _passed(self, events: list[Event]) -> list[Event]:
        self.passed += len(events)
        return events
