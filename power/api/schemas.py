"""JSON schemas of every request body, used both to validate requests and to build ``/openapi.json``.

Schemas check types and bounds only; unknown fields are allowed because real
clients send extras (``user``, ``n``, ``logit_bias`` ...). ``validate`` turns the
first violation into an ``InvalidRequest`` that names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from power.errors import InvalidRequest

__all__ = ["SCHEMAS", "schema_of", "validate"]

_S = {"type": "string"}
_B = {"type": "boolean"}
_I = {"type": "integer"}
_N = {"type": "number"}
_OBJ = {"type": "object"}
_KEEP_ALIVE = {"type": ["number", "string", "null"], "description": "seconds, or a Go duration like \"5m\""}
_THINK = {"anyOf": [{"type": "boolean"}, {"enum": ["low", "medium", "high", "max"]}, {"type": "null"}]}
_FORMAT = {"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}],
           "description": "\"json\" or a JSON schema"}
_IMAGES = {"type": ["array", "null"], "items": _S}
_OPTIONS = {"type": ["object", "null"],
            "description": "model options (num_ctx, temperature, stop, ...); \"grammar\": a GBNF grammar the "
                           "output must follow (a3s-power extension; not with format)"}
_TOP_LOGPROBS = {"type": "integer", "minimum": 0, "maximum": 20}
_TOOL_CHOICE = {"anyOf": [{"enum": ["none", "auto", "required"]}, {"type": "object"}, {"type": "null"}],
                "description": "none, auto, required, or {\"type\": \"function\", \"function\": {\"name\": ...}}"}
_STOP = {"anyOf": [{"type": "string"}, {"type": "array", "items": _S}, {"type": "null"}]}

_TOOL = {
    "type": "object",
    "properties": {"type": _S, "function": {"type": "object", "properties": {
        "name": _S, "description": _S, "parameters": _OBJ}, "required": ["name"]}},
    "required": ["function"],
}
_TOOL_CALL = {"type": "object", "properties": {"id": _S, "function": {"type": "object", "properties": {
    "index": _I, "name": _S, "arguments": {"type": ["object", "string"]}}}}}

_NATIVE_MESSAGE = {
    "type": "object",
    "properties": {
        "role": _S, "content": {"type": ["string", "null"]}, "thinking": _S, "images": _IMAGES,
        "tool_calls": {"type": ["array", "null"], "items": _TOOL_CALL}, "tool_name": _S, "tool_call_id": _S,
    },
    "required": ["role"],
}

_MODEL = {"type": "string", "description": "model name, e.g. llama3.2:latest"}

GENERATE = {
    "type": "object",
    "properties": {
        "model": _MODEL, "prompt": _S, "suffix": _S, "system": _S, "template": _S,
        "context": {"type": ["array", "null"], "items": _I}, "stream": _B, "raw": _B, "format": _FORMAT,
        "keep_alive": _KEEP_ALIVE, "images": _IMAGES, "options": _OPTIONS, "think": _THINK, "truncate": _B,
        "shift": _B, "logprobs": _B, "top_logprobs": _TOP_LOGPROBS, "_debug_render_only": _B,
    },
}
CHAT = {
    "type": "object",
    "properties": {
        "model": _MODEL, "messages": {"type": ["array", "null"], "items": _NATIVE_MESSAGE},
        "tools": {"type": ["array", "null"], "items": _TOOL}, "tool_choice": _TOOL_CHOICE, "format": _FORMAT,
        "options": _OPTIONS,
        "stream": _B, "keep_alive": _KEEP_ALIVE, "think": _THINK, "truncate": _B, "shift": _B, "logprobs": _B,
        "top_logprobs": _TOP_LOGPROBS, "_debug_render_only": _B,
    },
}
_INPUT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _S}, {"type": "null"}]}
EMBED = {
    "type": "object",
    "properties": {"model": _MODEL, "input": _INPUT, "truncate": _B, "dimensions": {"type": "integer", "minimum": 0},
                   "options": _OPTIONS, "keep_alive": _KEEP_ALIVE},
}
EMBEDDINGS = {
    "type": "object",
    "properties": {"model": _MODEL, "prompt": _S, "options": _OPTIONS, "keep_alive": _KEEP_ALIVE},
}
_NAMED = {"type": "object", "properties": {"model": _MODEL, "name": _MODEL}}
SHOW = {"type": "object", "properties": {"model": _MODEL, "name": _MODEL, "verbose": _B, "system": _S,
                                         "options": _OPTIONS}}
DELETE = _NAMED
COPY = {"type": "object", "properties": {"source": _S, "destination": _S}, "required": ["source", "destination"]}
PULL = {"type": "object", "properties": {"model": _MODEL, "name": _MODEL, "insecure": _B, "stream": _B}}
PUSH = PULL
CREATE = {
    "type": "object",
    "properties": {
        "model": _MODEL, "name": _MODEL, "from": _S,
        "files": {"type": "object", "additionalProperties": _S},
        "adapters": {"type": "object", "additionalProperties": _S},
        "template": _S, "system": _S, "license": {"anyOf": [_S, {"type": "array", "items": _S}]},
        "parameters": _OBJ, "messages": {"type": "array", "items": _NATIVE_MESSAGE}, "quantize": _S,
        "stream": _B, "renderer": _S, "parser": _S, "requires": _S,
    },
}

_CONTENT_PART = {"type": "object", "properties": {"type": _S}, "required": ["type"]}
_OA_MESSAGE = {
    "type": "object",
    "properties": {
        "role": _S,
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _CONTENT_PART}, {"type": "null"}]},
        "reasoning": _S, "tool_calls": {"type": "array"}, "tool_call_id": _S, "name": _S,
    },
    "required": ["role"],
}
_STREAM_OPTIONS = {"type": ["object", "null"], "properties": {"include_usage": _B}}
_SAMPLING = {
    "max_tokens": {"type": ["integer", "null"]}, "seed": {"type": ["integer", "null"]}, "stop": _STOP,
    "temperature": {"type": ["number", "null"]}, "top_p": {"type": ["number", "null"]},
    "frequency_penalty": {"type": ["number", "null"]}, "presence_penalty": {"type": ["number", "null"]},
    "stream": {"type": ["boolean", "null"]}, "stream_options": _STREAM_OPTIONS,
}
OA_CHAT = {
    "type": "object",
    "properties": {
        "model": _MODEL, "messages": {"type": "array", "items": _OA_MESSAGE, "minItems": 1},
        "response_format": {"type": ["object", "null"], "properties": {"type": _S, "json_schema": _OBJ}},
        "tools": {"type": ["array", "null"], "items": _TOOL}, "tool_choice": _TOOL_CHOICE,
        "reasoning_effort": {"type": ["string", "null"]},
        "reasoning": {"type": ["object", "null"]}, "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "max_completion_tokens": {"type": ["integer", "null"]}, **_SAMPLING,
    },
    "required": ["model", "messages"],
}
OA_COMPLETION = {
    "type": "object",
    "properties": {"model": _MODEL, "prompt": _S, "suffix": {"type": ["string", "null"]},
                   "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20}, **_SAMPLING},
    "required": ["model", "prompt"],
}
OA_EMBEDDINGS = {
    "type": "object",
    "properties": {"model": _MODEL, "input": _INPUT, "dimensions": {"type": ["integer", "null"], "minimum": 0},
                   "encoding_format": {"type": ["string", "null"]}},
    "required": ["model", "input"],
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "GenerateRequest": GENERATE, "ChatRequest": CHAT, "EmbedRequest": EMBED, "EmbeddingsRequest": EMBEDDINGS,
    "ShowRequest": SHOW, "DeleteRequest": DELETE, "CopyRequest": COPY, "PullRequest": PULL, "PushRequest": PUSH,
    "CreateRequest": CREATE, "ChatCompletionRequest": OA_CHAT, "CompletionRequest": OA_COMPLETION,
    "EmbeddingRequest": OA_EMBEDDINGS,
}
_VALIDATORS = {name: Draft202012Validator(schema) for name, schema in SCHEMAS.items()}


def schema_of(name: str) -> dict[str, Any]:
    return SCHEMAS[name]


def _path(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "body"


def _message(error: ValidationError) -> str:
    where = _path(error)
    if error.validator == "minItems" and error.instance == []:
        return f"[] is too short - '{where}'"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{missing} is required" if where == "body" else f"{where}.{missing} is required"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"invalid value for '{where}': expected {expected}, got {type(error.instance).__name__}"
    if error.validator == "anyOf" and where != "body":
        return f"invalid value for '{where}'"
    return f"invalid value for '{where}': {error.message[:200]}"


def validate(name: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """Validate ``body`` against the named schema; raise InvalidRequest naming the first bad field."""
    error = best_match(_VALIDATORS[name].iter_errors(body))
    if error is not None:
        raise InvalidRequest(_message(error))
    return body
