"""The Jupyter wire codec (service/jupyter_codec.py): WebSocket frames (JSON and the binary frame
with buffers) in and out, and the relay's check of kernel messages' signatures, on real ZMQ
sockets with no kernel behind them. The fast tier."""

import json
import struct

from cogbox.service import jupyter, jupyter_codec


def _message(**content: object) -> dict[str, object]:
    return {
        "header": {"msg_id": "m1", "msg_type": "execute_request"},
        "parent_header": {},
        "metadata": {},
        "content": dict(content),
        "channel": "shell",
    }


def test_a_binary_frame_round_trips_with_its_buffers() -> None:
    msg = _message(code="x = 1")
    frame = jupyter_codec.to_binary(msg, [b"\x00\x01", b"buffer two"])
    parsed = jupyter_codec.from_binary(frame)
    assert parsed is not None
    decoded, buffers = parsed
    assert decoded == msg and buffers == [b"\x00\x01", b"buffer two"]


def test_a_broken_binary_frame_is_refused_not_raised() -> None:
    frame = jupyter_codec.to_binary(_message(), [b"data"])
    assert jupyter_codec.from_binary(frame[:3]) is None  # no count
    assert jupyter_codec.from_binary(struct.pack("!I", 1000) + frame[4:]) is None  # offsets missing
    assert jupyter_codec.from_binary(struct.pack("!II", 1, 8) + b"not json") is None


def test_a_json_frame_gets_its_missing_parts_and_loses_inline_buffers() -> None:
    parsed = jupyter_codec.from_json(json.dumps({"header": {"msg_type": "kernel_info_request"}}))
    assert parsed is not None
    msg, buffers = parsed
    assert (msg["parent_header"], msg["metadata"], msg["content"], buffers) == ({}, {}, {}, [])
    with_buffers = jupyter_codec.from_json(json.dumps({**_message(), "buffers": ["x"]}))
    assert with_buffers is not None and "buffers" not in with_buffers[0]


def test_a_json_frame_that_is_no_message_is_refused() -> None:
    for text in ("not json", "[1, 2]", json.dumps({"header": "x"}), json.dumps({"content": 3})):
        assert jupyter_codec.from_json(text) is None, text


def test_a_reply_is_encoded_as_json_or_as_a_binary_frame_with_buffers() -> None:
    plain = jupyter_codec.encode(_message(status="ok"))
    assert isinstance(plain, str) and json.loads(plain)["content"] == {"status": "ok"}
    packed = {**_message(), "content": json.dumps({"text": "big output"}).encode()}
    spliced = jupyter_codec.encode(packed)
    assert isinstance(spliced, str) and json.loads(spliced)["content"] == {"text": "big output"}
    carrying = {**_message(data=1), "buffers": [memoryview(b"raw")]}
    frame = jupyter_codec.encode(carrying)
    assert isinstance(frame, bytes)
    parsed = jupyter_codec.from_binary(frame)
    assert parsed is not None and parsed[1] == [b"raw"] and parsed[0]["content"] == {"data": 1}


def test_channels_kernel_names_and_paths() -> None:
    assert jupyter_codec.default_channel({"header": {"msg_type": "input_reply"}}) == "stdin"
    assert jupyter_codec.default_channel({"header": {"msg_type": "execute_request"}}) == "shell"
    assert jupyter_codec.default_channel({"header": "junk"}) == "shell"
    assert (jupyter.image_of("python3"), jupyter.image_of("cogbox-cntk")) == ("python", "cntk")
    assert jupyter.image_of(jupyter.kernel_name("keras")) == "keras"
    assert jupyter.is_jupyter_path("/api/kernels") and jupyter.is_jupyter_path("/t/x/api")
    assert not jupyter.is_jupyter_path("/apix") and not jupyter.is_jupyter_path("/session")
