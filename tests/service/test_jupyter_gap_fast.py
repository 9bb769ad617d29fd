"""The replies a Jupyter relay owes its client across an agent restart (service/jupyter_gap.py):
a request whose reply the gap lost is answered as lost (with its idle) once the kernel has
answered a later barrier on the same channel; never twice, never before."""

from typing import Any

from jupyter_client.session import Session as Messages

from cogbox.service.jupyter_gap import IDLE_LAG_SECONDS, LOST_REPLY, ReplyLedger

_CLIENT = Messages()


def _request(kind: str = "execute_request") -> dict[str, Any]:
    return _CLIENT.msg(kind, {"code": "1"} if kind == "execute_request" else {})


def _from_kernel(channel: str, kind: str, parent: dict[str, Any], **content: Any) -> dict[str, Any]:
    msg = _CLIENT.msg(kind, content, parent=parent["header"])
    return {**msg, "channel": channel}


def _kinds(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["channel"], m["msg_type"]) for m in messages]


def test_a_reply_lost_in_the_gap_is_answered_as_lost_after_the_barrier() -> None:
    ledger = ReplyLedger()
    request = _request()
    ledger.sent("shell", request)
    ledger.received(_from_kernel("iopub", "execute_input", request, execution_count=3))
    [(channel, barrier)] = ledger.gap()
    assert (channel, barrier["msg_type"]) == ("shell", "kernel_info_request")
    assert ledger.settled() == []  # the kernel may still run it
    assert not ledger.received(_from_kernel("shell", "kernel_info_reply", barrier, status="ok"))
    assert not ledger.received(
        _from_kernel("iopub", "status", barrier, execution_state="idle")
    )  # the barrier's own messages are not the client's
    owed = ledger.settled()
    assert _kinds(owed) == [("shell", "execute_reply"), ("iopub", "status")]
    assert owed[0]["parent_header"]["msg_id"] == request["header"]["msg_id"]
    assert (owed[0]["content"]["ename"], owed[0]["content"]["execution_count"]) == (LOST_REPLY, 3)
    assert ledger.settled() == []  # given once


def test_a_request_answered_before_the_gap_is_not_owed() -> None:
    ledger = ReplyLedger()
    request = _request()
    ledger.sent("shell", request)
    ledger.received(_from_kernel("shell", "execute_reply", request, status="ok"))
    assert ledger.gap() == []
    assert ledger.notice(busy=False) is None


def test_the_real_idle_is_not_sent_again() -> None:
    ledger = ReplyLedger()
    request = _request()
    ledger.sent("shell", request)
    [(_, barrier)] = ledger.gap()
    ledger.received(_from_kernel("iopub", "status", request, execution_state="idle"))
    ledger.received(_from_kernel("shell", "kernel_info_reply", barrier, status="ok"))
    ledger.received(_from_kernel("iopub", "status", barrier, execution_state="idle"))
    assert _kinds(ledger.settled()) == [("shell", "execute_reply")]


def test_a_lagging_barrier_idle_delays_the_lost_replies_only_briefly() -> None:
    ledger = ReplyLedger()
    ledger.sent("shell", _request())
    [(_, barrier)] = ledger.gap()
    ledger.received(_from_kernel("shell", "kernel_info_reply", barrier, status="ok"), now=100.0)
    assert ledger.settled(now=100.0) == []
    assert len(ledger.settled(now=100.0 + IDLE_LAG_SECONDS + 0.1)) == 2


def test_a_control_request_gets_its_own_barrier_and_reply() -> None:
    ledger = ReplyLedger()
    ledger.sent("control", _request("interrupt_request"))
    [(channel, barrier)] = ledger.gap()
    assert channel == "control"
    ledger.received(_from_kernel("control", "kernel_info_reply", barrier, status="ok"))
    assert _kinds(ledger.settled())[0] == ("control", "interrupt_reply")


def test_comm_messages_are_owed_no_reply() -> None:
    ledger = ReplyLedger()
    ledger.sent("shell", _CLIENT.msg("comm_msg", {"comm_id": "c", "data": {}}))
    assert ledger.gap() == []


def test_stdin_replies_are_owed_nothing_and_the_notice_names_the_lost_replies() -> None:
    ledger = ReplyLedger()
    ledger.sent("stdin", _request("input_reply"))
    assert ledger.gap() == []
    ledger.sent("shell", _request())
    ledger.gap()
    notice = ledger.notice(busy=True)
    assert notice is not None and notice["channel"] == "iopub"
    assert "1 reply was lost" in notice["content"]["text"]
