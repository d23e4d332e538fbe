"""The wire between the server and a runner: length-prefixed JSON frames over a Unix socket.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON holding one object. Requests from the server carry ``op`` and ``id``;
answers carry the same ``id`` and one of ``chunks`` (a list: whatever output
of that request was ready is sent together), ``result`` or ``error``.
Messages the runner sends on its own (``progress`` while its model loads, with the
fraction loaded, at most once a percent; ``ready``, ``failed``, ``exiting``) carry ``op``.

Everything here is pure: no sockets, so it is easy to test and to fuzz.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from power import errors
from power.errors import EngineError, PowerError

__all__ = [
    "MAX_FRAME",
    "FrameDecoder",
    "ProtocolError",
    "RunnerCrashed",
    "chunk_to_wire",
    "encode",
    "encode_many",
    "error_from_wire",
    "error_to_wire",
    "merge_chunk",
]

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 << 20  # a batch of embeddings of a long input list can be large; anything past this is a bug


class ProtocolError(EngineError):
    """The runner sent bytes that are not a valid frame."""


class RunnerCrashed(EngineError):
    """The runner process serving the model ended unexpectedly."""


def encode(msg: Mapping[str, Any]) -> bytes:
    """Frame one message."""
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _HEADER.pack(len(body)) + body


def encode_many(msgs: Iterable[Mapping[str, Any]]) -> bytes:
    """Frame several messages into one buffer, so one write carries them all."""
    return b"".join(encode(m) for m in msgs)


class FrameDecoder:
    """Turn a byte stream into messages; feed it whatever the socket returned."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= _HEADER.size:
            (n,) = _HEADER.unpack_from(buf, pos)
            if n > self._max:
                raise ProtocolError(f"runner frame too large: {n} bytes")
            end = pos + _HEADER.size + n
            if end > len(buf):
                break
            try:
                msg = json.loads(bytes(buf[pos + _HEADER.size:end]))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise ProtocolError(f"runner sent a malformed frame: {exc}") from exc
            if not isinstance(msg, dict):
                raise ProtocolError("runner frame is not an object")
            out.append(msg)
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def _logprob_to_wire(lp: Any) -> dict[str, Any]:
    return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t, "logprob": p, "bytes": list(b)} for t, p, b in lp.top]}


def chunk_to_wire(chunk: Any) -> dict[str, Any]:
    """Turn an engine ``Chunk`` into a JSON-able dict; the final one carries the timings."""
    out: dict[str, Any] = {"text": chunk.text, "tokens": list(chunk.tokens)}
    if chunk.logprobs:
        out["logprobs"] = [_logprob_to_wire(lp) for lp in chunk.logprobs]
    if chunk.done:
        out.update(done=True, done_reason=chunk.done_reason, prompt_eval_count=chunk.prompt_eval_count,
                   cached_tokens=chunk.cached_tokens,
                   prompt_eval_duration=chunk.prompt_eval_duration, eval_count=chunk.eval_count,
                   eval_duration=chunk.eval_duration, load_duration=chunk.load_duration)
        if chunk.draft_count:
            out.update(draft_count=chunk.draft_count, draft_accepted=chunk.draft_accepted)
    return out


def merge_chunk(into: dict[str, Any], new: dict[str, Any]) -> None:
    """Append ``new`` to a not-yet-sent ``into`` so several tokens travel as one chunk."""
    into["text"] += new["text"]
    into["tokens"].extend(new["tokens"])
    if "logprobs" in new:
        into.setdefault("logprobs", []).extend(new["logprobs"])
    for key, value in new.items():
        if key not in ("text", "tokens", "logprobs"):
            into[key] = value


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    kind = "EngineError"
    if isinstance(exc, PowerError):
        # The nearest class the other side can rebuild with the same status (GrammarError -> InvalidRequest).
        kind = next((c.__name__ for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c
                     and getattr(c, "status", None) == exc.status), "EngineError")
    return {"type": kind, "message": str(exc) or kind}


def error_from_wire(err: Any) -> PowerError:
    """Rebuild the typed error a runner reported; unknown kinds become ``EngineError``."""
    if not isinstance(err, dict):
        return EngineError(str(err))
    message = str(err.get("message") or "runner error")
    cls = getattr(errors, str(err.get("type")), None)
    if isinstance(cls, type) and issubclass(cls, PowerError) and cls is not errors.ModelNotFound:
        try:
            return cls(message)
        except TypeError:
            pass
    return EngineError(message)
