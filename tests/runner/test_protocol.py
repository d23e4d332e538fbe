from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from power.errors import Busy, EngineError, InvalidRequest
from power.runner.protocol import (
    FrameDecoder,
    ProtocolError,
    encode,
    encode_many,
    error_from_wire,
    error_to_wire,
    merge_chunk,
)


def test_round_trip_across_arbitrary_splits() -> None:
    msgs = [{"id": i, "chunks": [{"text": "é" * i, "tokens": [i]}]} for i in range(20)]
    data = encode_many(msgs)
    for step in (1, 3, 7, 64, len(data)):
        dec = FrameDecoder()
        out = []
        for i in range(0, len(data), step):
            out.extend(dec.feed(data[i:i + step]))
        assert out == msgs
        assert dec.pending == 0


def test_oversized_and_malformed_frames_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder(max_frame=10).feed(encode({"text": "x" * 50}))
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack("!I", 3) + b"{x}")
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(encode([1, 2]))  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_decoder_is_total(data: bytes) -> None:
    try:
        FrameDecoder(max_frame=1000).feed(data)
    except ProtocolError:
        pass


def test_merge_keeps_order_and_final_fields() -> None:
    a = {"text": "a", "tokens": [1]}
    merge_chunk(a, {"text": "b", "tokens": [2], "logprobs": [{"token": "b"}]})
    merge_chunk(a, {"text": "c", "tokens": [3], "done": True, "done_reason": "stop", "eval_count": 3})
    assert a == {"text": "abc", "tokens": [1, 2, 3], "logprobs": [{"token": "b"}], "done": True,
                 "done_reason": "stop", "eval_count": 3}


def test_errors_keep_their_type() -> None:
    assert isinstance(error_from_wire(error_to_wire(InvalidRequest("bad"))), InvalidRequest)
    assert isinstance(error_from_wire(error_to_wire(Busy())), Busy)
    e = error_from_wire(error_to_wire(ValueError("boom")))
    assert type(e) is EngineError and str(e) == "boom"
    assert type(error_from_wire({"type": "os", "message": "x"})) is EngineError
    assert type(error_from_wire("junk")) is EngineError


def test_outbox_merges_ready_chunks_into_one_frame() -> None:
    import socket

    from power.runner.process import Outbox

    ours, theirs = socket.socketpair()
    box = Outbox(theirs)
    with box._cond:  # hold the writer back so that all three are ready together
        box.chunk(1, {"text": "a", "tokens": [1]})
        box.chunk(2, {"text": "x", "tokens": [9]})
        box.chunk(1, {"text": "b", "tokens": [2]})
        box.fail(2, InvalidRequest("bad"))
        box.chunk(1, {"text": "c", "tokens": [3], "done": True, "done_reason": "stop"})
    box.close()
    theirs.close()
    data = b""
    while chunk := ours.recv(65536):
        data += chunk
    frames = FrameDecoder().feed(data)
    assert frames == [
        {"id": 1, "chunks": [{"text": "abc", "tokens": [1, 2, 3], "done": True, "done_reason": "stop"}]},
        {"id": 2, "chunks": [{"text": "x", "tokens": [9]}], "error": {"type": "InvalidRequest", "message": "bad"}},
    ]
