"""What one run's kernel messages amount to, free of any I/O: the one reading of a run's
replies, statuses, input requests and output, shared by the session's blocking loop and the
agent's asyncio loop (`cogbox.kernel.loop_run`)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cogbox.kernel.events import Event, Finished, InputRequest
from cogbox.kernel.messages import output_event
from cogbox.kernel.output_cap import OutputCap
from cogbox.kernel.run_request import RunRequest, timeout_finished
from cogbox.kernel.session_state import AskedInput, PendingRun


@dataclass
class RunProgress:
    """One run so far: fed the messages whose parent is the run's request (`take`), it
    gives the events to pass on, and knows when the run is over (its reply and its idle
    status both arrived)."""

    request: RunRequest
    cap: OutputCap
    on_begun: Callable[[], None]  # the kernel began the code (its execute_input)
    tap: Callable[[Event], None] | None = None  # sees every output event before the cap
    pending: PendingRun | None = None  # a persisted run: its input requests are recorded
    save: Callable[[PendingRun], None] = lambda run: None
    reply: dict[str, Any] | None = None
    idle: bool = False
    passed: int = 0  # events given so far: where a re-attaching owner puts an InputRequest

    @property
    def over(self) -> bool:
        return self.reply is not None and self.idle

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
            self.idle = self.idle or content.get("execution_state") == "idle"
            return []
        if kind == "execute_input":
            self.on_begun()
        event = output_event(kind, content)
        if event is not None and self.tap is not None:
            self.tap(event)
        return self._passed(list(self.cap.admit(event)))

    def finish(self, interrupted: bool, timeout: float | None) -> Finished:
        """The terminal event of a run that is `over` (`interrupted`: by its time limit)."""
        assert self.reply is not None
        if interrupted:
            return timeout_finished(self.reply.get("execution_count"), timeout)
        return self.request.finish(self.reply)

    def _passed(self, events: list[Event]) -> list[Event]:
        self.passed += len(events)
        return events
