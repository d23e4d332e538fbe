"""Build a Responses answer from a generation's pieces: output items, usage, and the typed stream events.

One builder serves both ways of answering: a streamed response sends the events
it returns, a whole one ignores them and sends ``builder.response``, so both
carry the same items. Thinking opens a ``reasoning`` item, visible text a
``message`` item, and each parsed tool call is a ``function_call``,
``custom_tool_call`` or ``local_shell_call`` item, as its tool was declared
(``response_tools``); a change of kind closes the open item. Events follow the order the openai SDK's
stream helpers accumulate: ``response.created``, ``response.in_progress``, per
item ``output_item.added``, ``content_part.added``, text or argument deltas and
their ``.done`` (a custom tool's input: ``custom_tool_call_input``), ``content_part.done``, ``output_item.done``; then
``response.completed``. Each event carries its ``sequence_number``.

A response cut off by ``max_output_tokens`` has status ``incomplete`` with
``incomplete_details.reason`` ``max_output_tokens``; its stream still ends with
``response.completed``, the event the SDK's ``get_final_response()`` waits for.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from typing import Any

from power.prompt import ToolCall
from power.server.inference import Piece
from power.server.openai.response_tools import SHELL, ResponseTools, shell_action

__all__ = ["ResponseBuilder", "new_id"]


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: ``resp_``, ``msg_``, ``rs_`` or ``fc_`` and 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "message":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "reasoning_text", "text": text}


def _text_event(kind: str) -> str:
    return "response.output_text" if kind == "message" else "response.reasoning_text"


class ResponseBuilder:
    """The output of one response, built piece by piece; each step returns the events it caused."""

    def __init__(self, head: dict[str, Any], tools: ResponseTools | None = None) -> None:
        self.head = head
        self.tools = tools or ResponseTools()
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the reasoning or message item being written
        self.text = ""  # of the open item
        self.reasoning_tokens = 0
        self._unassigned = 0  # tokens whose text the parser still holds back
        self.response: dict[str, Any] = {}

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **copy.deepcopy(fields)}
        self.sequence += 1
        return event

    def snapshot(self, status: str, **fields: Any) -> dict[str, Any]:
        """The response object as it stands."""
        text = "".join(p["text"] for item in self.output if item["type"] == "message"
                       for p in item["content"] if p["type"] == "output_text")
        return {**self.head, "status": status, "output": self.output, "output_text": text, **fields}

    def begin(self) -> list[dict[str, Any]]:
        start = self.snapshot("in_progress")
        return [self._event("response.created", response=start),
                self._event("response.in_progress", response=start)]

    def feed(self, piece: Piece) -> list[dict[str, Any]]:
        d = piece.delta
        events: list[dict[str, Any]] = []
        if d.thinking:
            events += self._write("reasoning", d.thinking)
        if d.content:
            events += self._write("message", d.content)
        for call in d.tool_calls:
            events += self._close("completed") + self._call(call)
        # a step's tokens count as reasoning when what they turn out to be is thinking
        self._unassigned += len(piece.tokens)
        if d.thinking and not d.content and not d.tool_calls:
            self.reasoning_tokens += self._unassigned
        if d.thinking or d.content or d.tool_calls:
            self._unassigned = 0
        return events

    def finish(self, final: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Close the open item and build ``self.response``; the last event is ``response.completed``."""
        final = final or {}
        cut = final.get("done_reason") == "length"
        if self.open is not None and self.open["type"] == "reasoning":
            self.reasoning_tokens += self._unassigned
        status = "incomplete" if cut else "completed"
        events = self._close(status)
        if not self.output:  # nothing at all was said: one empty message
            events += self._start("message") + self._close(status)
        self.response = self.snapshot(status, usage=self._usage(final), completed_at=int(time.time()),
                                      incomplete_details={"reason": "max_output_tokens"} if cut else None)
        return events + [self._event("response.completed", response=self.response)]

    def failed(self, message: str) -> list[dict[str, Any]]:
        """The ``error`` event and ``response.failed``, for an error once the stream has begun."""
        self.response = self.snapshot("failed", error={"code": "server_error", "message": message})
        return [self._event("error", code="server_error", message=message, param=None),
                self._event("response.failed", response=self.response)]

    def _usage(self, final: dict[str, Any]) -> dict[str, Any]:
        prompt, output = int(final.get("prompt_eval_count") or 0), int(final.get("eval_count") or 0)
        # KV reuse is implicit, as OpenAI's automatic prompt caching: nothing is "written" with a retention
        cached = min(int(final.get("cached_tokens") or 0), prompt)
        return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": min(self.reasoning_tokens, output)},
                "total_tokens": prompt + output}

    def _start(self, kind: str) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"id": new_id("msg" if kind == "message" else "rs"), "type": kind,
                                "status": "in_progress"}
        item.update({"role": "assistant", "content": []} if kind == "message" else {"summary": [], "content": []})
        index = len(self.output)
        self.output.append(item)
        self.open, self.text = item, ""
        return [self._event("response.output_item.added", output_index=index, item=item),
                self._event("response.content_part.added", item_id=item["id"], output_index=index,
                            content_index=0, part=_part(kind, ""))]

    def _write(self, kind: str, text: str) -> list[dict[str, Any]]:
        events = []
        if self.open is None or self.open["type"] != kind:
            events = self._close("completed") + self._start(kind)
        assert self.open is not None
        self.text += text
        extra = {"logprobs": []} if kind == "message" else {}
        events.append(self._event(_text_event(kind) + ".delta", item_id=self.open["id"],
                                  output_index=len(self.output) - 1, content_index=0, delta=text, **extra))
        return events

    def _close(self, status: str) -> list[dict[str, Any]]:
        item = self.open
        if item is None:
            return []
        self.open = None
        kind, index = item["type"], len(self.output) - 1
        part = _part(kind, self.text)
        item.update(content=[part], status=status)
        extra = {"logprobs": []} if kind == "message" else {}
        return [self._event(_text_event(kind) + ".done", item_id=item["id"], output_index=index, content_index=0,
                            text=self.text, **extra),
                self._event("response.content_part.done", item_id=item["id"], output_index=index,
                            content_index=0, part=part),
                self._event("response.output_item.done", output_index=index, item=item)]

    def _call(self, call: ToolCall) -> list[dict[str, Any]]:
        """The item of one tool call, of the kind its tool was declared as."""
        spec = self.tools.spec(call.name)
        index = len(self.output)
        deltas: list[tuple[str, dict[str, Any]]] = []  # the events between added and done, and their fields
        final: dict[str, Any] = {}  # the item's fields once the deltas are sent
        if spec.kind == SHELL:
            item: dict[str, Any] = {"id": new_id("lsh"), "type": "local_shell_call", "status": "in_progress",
                                    "call_id": call.id, "action": shell_action(call.arguments)}
        elif spec.kind == "custom":
            text = call.arguments.get("input")
            text = text if isinstance(text, str) else json.dumps(call.arguments, ensure_ascii=False)
            item = {"id": new_id("ctc"), "type": "custom_tool_call", "status": "in_progress", "call_id": call.id,
                    "name": spec.name, "input": ""}
            deltas = [("response.custom_tool_call_input.delta", {"delta": text}),
                      ("response.custom_tool_call_input.done", {"input": text})]
            final = {"input": text}
        else:
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "call_id": call.id,
                    "name": spec.name, "arguments": ""}
            deltas = [("response.function_call_arguments.delta", {"delta": arguments}),
                      ("response.function_call_arguments.done", {"arguments": arguments})]
            final = {"arguments": arguments}
        if spec.namespace is not None:
            item["namespace"] = spec.namespace
        self.output.append(item)
        events = [self._event("response.output_item.added", output_index=index, item=item)]
        events += [self._event(kind, item_id=item["id"], output_index=index, **fields) for kind, fields in deltas]
        item.update(final, status="completed")
        return events + [self._event("response.output_item.done", output_index=index, item=item)]
