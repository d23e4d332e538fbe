"""JSON schemas of every request and response body: requests are validated with them, ``/openapi.json`` shows them.

Request schemas check types, bounds and required fields only; unknown fields
are allowed because real clients send extras (``user``, ``n``, ``logit_bias``
...). ``validate`` turns the first violation into an ``InvalidRequest`` that
names the field. Response schemas describe what the handlers send, one object
per JSON answer, NDJSON line or server-sent event; the tests hold the real
server's answers to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from power.errors import InvalidRequest

__all__ = ["SCHEMAS", "REQUESTS", "RESPONSES", "schema_of", "validate"]

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

_TOKEN = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "description": "a token id"}
_MODEL = {"type": "string", "description": "model name, e.g. llama3.2:latest", "examples": ["llama3.2"]}
# ``model``, or its deprecated alias ``name``, on the routes that take either.
_MODEL_OR_NAME = [{"required": ["model"]}, {"required": ["name"]}]

_LOAD_PROGRESS = {"type": "boolean",
                  "description": "stream {status: loading model, completed, total} lines while the model loads"}
GENERATE = {
    "type": "object",
    "properties": {
        "model": _MODEL, "name": _MODEL, "prompt": _S, "suffix": _S, "system": _S, "template": _S,
        "context": {"type": ["array", "null"], "items": _TOKEN}, "stream": _B, "raw": _B, "format": _FORMAT,
        "keep_alive": _KEEP_ALIVE, "images": _IMAGES, "options": _OPTIONS, "think": _THINK, "truncate": _B,
        "shift": _B, "logprobs": _B, "top_logprobs": _TOP_LOGPROBS, "_debug_render_only": _B,
        "load_progress": _LOAD_PROGRESS,
    },
    "anyOf": _MODEL_OR_NAME,
}
CHAT = {
    "type": "object",
    "properties": {
        "model": _MODEL, "messages": {"type": ["array", "null"], "items": _NATIVE_MESSAGE},
        "tools": {"type": ["array", "null"], "items": _TOOL}, "tool_choice": _TOOL_CHOICE, "format": _FORMAT,
        "options": _OPTIONS,
        "stream": _B, "keep_alive": _KEEP_ALIVE, "think": _THINK, "truncate": _B, "shift": _B, "logprobs": _B,
        "top_logprobs": _TOP_LOGPROBS, "_debug_render_only": _B, "load_progress": _LOAD_PROGRESS,
    },
    "required": ["model"],
}
_INPUT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _S}, {"type": "null"}]}
EMBED = {
    "type": "object",
    "properties": {"model": _MODEL, "name": _MODEL, "input": _INPUT, "truncate": _B,
                   "dimensions": {"type": "integer", "minimum": 0}, "options": _OPTIONS, "keep_alive": _KEEP_ALIVE},
    "anyOf": _MODEL_OR_NAME,
}
EMBEDDINGS = {
    "type": "object",
    "properties": {"model": _MODEL, "name": _MODEL, "prompt": _S, "options": _OPTIONS, "keep_alive": _KEEP_ALIVE},
    "anyOf": _MODEL_OR_NAME,
}
RERANK = {
    "type": "object",
    "properties": {
        "model": _MODEL, "query": _S,
        "documents": {"type": "array", "items": {"anyOf": [_S, {"type": "object", "properties": {"text": _S}}]},
                      "description": "strings, or objects whose text is scored (Cohere/Jina)"},
        "top_n": {"type": ["integer", "null"], "minimum": 1}, "return_documents": {"type": ["boolean", "null"]},
        "truncate": _B, "options": _OPTIONS, "keep_alive": _KEEP_ALIVE,
    },
    "required": ["model", "query", "documents"],
}
# llama-server's /rerank also takes text-embeddings-inference's request (texts, no model needed).
RERANK_OR_TEI = {
    "type": "object",
    "properties": {
        **RERANK["properties"],
        "model": {**_MODEL, "description": "required with documents; with texts only to pick among rerankers"},
        "texts": {"type": "array", "items": _S, "description": "text-embeddings-inference's documents"},
        "raw_scores": _B, "return_text": _B, "truncation_direction": {"enum": ["Right", "Left", "right", "left"]},
    },
    "required": ["query"],
    "description": "documents (Jina/Cohere, answered with results) or texts (TEI, answered with a list)",
}
TOKENIZE = {
    "type": "object",
    "properties": {"model": _MODEL, "name": _MODEL, "content": _S, "prompt": {**_S, "description": "alias of content"},
                   "add_special": {**_B, "description": "add BOS/EOS as the model does (default false)"},
                   "parse_special": {**_B, "description": "read control tokens' text as them (default true)"},
                   "with_pieces": {**_B, "description": "answer [{id, piece}] instead of ids"}},
    "anyOf": _MODEL_OR_NAME,
}
DETOKENIZE = {"type": "object", "properties": {"model": _MODEL, "name": _MODEL,
                                               "tokens": {"type": ["array", "null"], "items": _TOKEN}},
              "anyOf": _MODEL_OR_NAME}
SHOW = {"type": "object", "properties": {"model": _MODEL, "name": _MODEL, "verbose": _B, "system": _S,
                                         "options": _OPTIONS}, "anyOf": _MODEL_OR_NAME}
DELETE = {"type": "object", "properties": {"model": _MODEL, "name": _MODEL}, "anyOf": _MODEL_OR_NAME}
COPY = {"type": "object", "properties": {"source": _S, "destination": _S}, "required": ["source", "destination"]}
PULL = {"type": "object", "properties": {"model": _MODEL, "name": _MODEL, "insecure": _B, "stream": _B},
        "anyOf": _MODEL_OR_NAME}
PUSH = PULL
CREATE = {
    "type": "object",
    "properties": {
        "model": _MODEL, "name": _MODEL, "from": _S,
        "files": {"type": "object", "additionalProperties": _S},
        "adapters": {"type": "object", "additionalProperties": _S},
        "draft_files": {"type": "object", "additionalProperties": _S},
        "draft": _S, "draft_quantize": _S,
        "template": _S, "system": _S, "license": {"anyOf": [_S, {"type": "array", "items": _S}]},
        "parameters": _OBJ, "messages": {"type": "array", "items": _NATIVE_MESSAGE}, "quantize": _S,
        "stream": _B, "renderer": _S, "parser": _S, "requires": _S,
    },
    "anyOf": _MODEL_OR_NAME,
}

_CONTENT_PART = {"type": "object", "properties": {
    "type": _S, "text": _S, "image_url": {"type": ["string", "object"]}, "input_audio": _OBJ}, "required": ["type"]}
_OA_CALL = {"type": "object", "properties": {"id": _S, "type": _S, "function": {"type": "object", "properties": {
    "name": _S, "arguments": {"type": ["string", "object", "null"]}}}}}
_OA_MESSAGE = {
    "type": "object",
    "properties": {
        "role": _S,
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _CONTENT_PART}, {"type": "null"}]},
        "reasoning": _S, "tool_calls": {"type": ["array", "null"], "items": _OA_CALL}, "tool_call_id": _S,
        "name": _S,
    },
    "required": ["role"],
}
_STREAM_OPTIONS = {"type": ["object", "null"], "properties": {"include_usage": _B}}
_SAMPLING = {
    "max_tokens": {"type": ["integer", "null"]}, "seed": {"type": ["integer", "null"]}, "stop": _STOP,
    "temperature": {"type": ["number", "null"]}, "top_p": {"type": ["number", "null"]},
    "frequency_penalty": {"type": ["number", "null"]}, "presence_penalty": {"type": ["number", "null"]},
    "stream": {"type": ["boolean", "null"]}, "stream_options": _STREAM_OPTIONS,
    "n": {"type": ["integer", "null"], "minimum": 1,
          "description": "choices to generate from one evaluation of the prompt; at most the model's parallel "
                         "sequences (OLLAMA_NUM_PARALLEL)"},
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

_NUM_OR_NULL = {"type": ["number", "null"]}
OA_RESPONSE = {
    "type": "object",
    "properties": {
        "model": _MODEL,
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": _OBJ}],
                  "description": "a string (one user message) or input items: message, reasoning, "
                                 "function_call, custom_tool_call, local_shell_call and their outputs"},
        "instructions": {"type": ["string", "null"]},
        "tools": {"type": ["array", "null"], "items": {"type": "object", "properties": {"type": _S, "name": _S},
                                                       "required": ["type"]},
                  "description": "function tools, flat ({\"type\": \"function\", \"name\": ..., \"parameters\": "
                                 "...}), namespace, custom and local_shell tools; hosted tools are left out"},
        "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]}, {"type": "object"}, {"type": "null"}],
                        "description": "none, auto, required, {\"type\": \"function\", \"name\": ...} or "
                                       "{\"type\": \"allowed_tools\", \"mode\": ..., \"tools\": [...]}"},
        "text": {"type": ["object", "null"], "properties": {"format": {"type": ["object", "null"]}},
                 "description": "format: {\"type\": \"text\" | \"json_object\" | \"json_schema\", \"schema\": ...}"},
        "reasoning": {"type": ["object", "null"], "properties": {"effort": {"type": ["string", "null"]}}},
        "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
        "temperature": _NUM_OR_NULL, "top_p": _NUM_OR_NULL,
        "stream": {"type": ["boolean", "null"]}, "store": {"type": ["boolean", "null"]},
        "previous_response_id": {"type": ["string", "null"]},
        "truncation": {"enum": ["auto", "disabled", None]},
        "parallel_tool_calls": {"type": ["boolean", "null"]}, "metadata": {"type": ["object", "null"]},
    },
    "required": ["model", "input"],
}

# Anthropic Messages (/v1/messages): block contents are checked by the adapter, which names the bad block.
_AN_BLOCK = {"type": "object", "properties": {"type": _S}, "required": ["type"]}
_AN_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _AN_BLOCK}]}
_AN_MESSAGE = {"type": "object", "properties": {"role": {"enum": ["user", "assistant"]}, "content": _AN_CONTENT},
               "required": ["role", "content"]}
_AN_TOOL = {"type": "object", "properties": {"name": _S, "description": _S, "input_schema": _OBJ, "type": _S},
            "required": ["name"]}
_AN_TOOL_CHOICE = {"type": "object", "properties": {"type": {"enum": ["auto", "any", "tool", "none"]}, "name": _S,
                                                    "disable_parallel_tool_use": _B}, "required": ["type"],
                   "description": "auto, any (a call is forced), tool (the named one is forced) or none"}
_AN_THINKING = {"type": "object", "properties": {"type": {"enum": ["enabled", "disabled", "adaptive"]},
                                                 "budget_tokens": {"type": "integer", "minimum": 1}},
                "required": ["type"],
                "description": "budget_tokens is enforced: past it the thinking is closed and the answer follows"}
_AN_PROMPT = {
    "model": _MODEL, "messages": {"type": "array", "items": _AN_MESSAGE, "minItems": 1},
    "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": _AN_BLOCK}]},
    "tools": {"type": "array", "items": _AN_TOOL}, "tool_choice": _AN_TOOL_CHOICE, "thinking": _AN_THINKING,
    "output_config": {"type": ["object", "null"], "properties": {
        "effort": {"type": ["string", "null"]},
        "format": {"type": ["object", "null"], "description": "{\"type\": \"json_schema\", \"schema\": ...}: the "
                                                              "answer follows the schema"}}},
    "output_format": {"type": ["object", "null"], "description": "the structured-outputs beta's name for "
                                                                 "output_config.format"},
}
AN_MESSAGES = {
    "type": "object",
    "properties": {
        **_AN_PROMPT, "max_tokens": {"type": "integer", "minimum": 1}, "stream": _B,
        "stop_sequences": {"type": "array", "items": _S, "maxItems": 64}, "temperature": _N, "top_p": _N,
        "top_k": {"type": "integer", "minimum": 0}, "metadata": _OBJ,
    },
    "required": ["model", "max_tokens", "messages"],
}
AN_COUNT_TOKENS = {"type": "object", "properties": _AN_PROMPT, "required": ["model", "messages"]}

REQUESTS: dict[str, dict[str, Any]] = {
    "GenerateRequest": GENERATE, "ChatRequest": CHAT, "EmbedRequest": EMBED, "EmbeddingsRequest": EMBEDDINGS,
    "ShowRequest": SHOW, "DeleteRequest": DELETE, "CopyRequest": COPY, "PullRequest": PULL, "PushRequest": PUSH,
    "CreateRequest": CREATE, "ChatCompletionRequest": OA_CHAT, "CompletionRequest": OA_COMPLETION,
    "EmbeddingRequest": OA_EMBEDDINGS, "ResponseRequest": OA_RESPONSE,
    "MessagesRequest": AN_MESSAGES, "CountTokensRequest": AN_COUNT_TOKENS, "RerankRequest": RERANK,
    "RerankOrTeiRequest": RERANK_OR_TEI,
    "TokenizeRequest": TOKENIZE, "DetokenizeRequest": DETOKENIZE,
}


# ---- responses: what the handlers send (extra fields allowed, as clients must ignore them) -------------------

def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object schema whose ``required`` properties are always sent and ``optional`` ones sometimes."""
    return {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required)}


_COUNT = {"type": "integer", "minimum": 0}
_NULLABLE_S = {"type": ["string", "null"]}
_TOP_LOGPROB = _object({"token": _S, "logprob": _N}, {"bytes": {"type": ["array", "null"], "items": _I}})
_LOGPROB = _object({"token": _S, "logprob": _N},
                   {"bytes": {"type": ["array", "null"], "items": _I}, "top_logprobs": {"type": "array",
                                                                                        "items": _TOP_LOGPROB}})
_FINAL = {  # the last chunk of a generation (and the whole answer without streaming)
    "done_reason": _S, "total_duration": _COUNT, "load_duration": _COUNT, "prompt_eval_count": _COUNT,
    "prompt_eval_duration": _COUNT, "eval_count": _COUNT, "eval_duration": _COUNT,
    "draft_count": _COUNT, "draft_accepted": _COUNT,  # speculative decoding (draft_lookup)
    "logprobs": {"type": "array", "items": _LOGPROB},
    "_debug_info": _object({"rendered_template": _S}),
}
_DETAILS = {"type": "object", "properties": {
    "parent_model": _S, "format": _S, "family": _S, "families": {"type": ["array", "null"], "items": _S},
    "parameter_size": _S, "quantization_level": _S,
    "draft": {"type": "object", "properties": {"format": _S, "family": _S, "parameter_size": _S,
                                               "quantization_level": _S}}}}

ERROR = _object({"error": _S})
OA_ERROR = _object({"error": _object({"message": _S, "type": _S, "param": _NULLABLE_S,
                                      "code": {"type": ["string", "integer", "null"]}})})

_LOADING = {"status": {"const": "loading model"}, "completed": _COUNT, "total": _COUNT}  # load_progress lines
GENERATE_RESPONSE = _object({"model": _S, "created_at": _S, "response": _S, "done": _B},
                            {"thinking": _S, "context": {"type": "array", "items": _I}, **_FINAL, **_LOADING})
_OUT_TOOL_CALL = _object({"function": _object({"name": _S, "arguments": _OBJ}, {"index": _I})}, {"id": _S})
_OUT_MESSAGE = _object({"role": {"const": "assistant"}, "content": _S},
                       {"thinking": _S, "tool_calls": {"type": "array", "items": _OUT_TOOL_CALL}})
CHAT_RESPONSE = _object({"model": _S, "created_at": _S, "message": _OUT_MESSAGE, "done": _B},
                        {**_FINAL, **_LOADING})
EMBED_RESPONSE = _object({"model": _S, "embeddings": {"type": "array", "items": {"type": "array", "items": _N}}},
                         {"total_duration": _COUNT, "load_duration": _COUNT, "prompt_eval_count": _COUNT})
EMBEDDINGS_RESPONSE = _object({"embedding": {"type": "array", "items": _N}})
STATUS = _object({"status": _S}, {"digest": _S, "total": _COUNT, "completed": _COUNT})
_MODEL_ENTRY = _object({"name": _S, "model": _S, "size": _COUNT, "digest": _S, "details": _DETAILS},
                       {"modified_at": _S, "remote_model": _S, "remote_host": _S})
TAGS = _object({"models": {"type": "array", "items": _MODEL_ENTRY}})
SHOW_RESPONSE = _object({"model_info": _OBJ}, {
    "modelfile": _S, "parameters": _S, "template": _S, "system": _S, "license": _S, "details": _DETAILS,
    "messages": {"type": "array", "items": _OBJ}, "projector_info": _OBJ, "tensors": {"type": "array"},
    "capabilities": {"type": "array", "items": _S}, "modified_at": _S})
_RUNNING = _object({"name": _S, "model": _S, "size": _COUNT, "size_vram": _COUNT, "digest": _S},
                   {"details": _DETAILS, "expires_at": _S, "context_length": _COUNT, "processor": _S,
                    "running": _COUNT, "waiting": _COUNT, **_LOADING})
PS = _object({"models": {"type": "array", "items": _RUNNING}})
RERANK_RESPONSE = _object({"model": _S, "results": {"type": "array", "items": _object(
    {"index": _COUNT, "relevance_score": _N}, {"document": _OBJ})},
    "usage": _object({"prompt_tokens": _COUNT, "total_tokens": _COUNT})}, {"object": {"const": "list"}})
TEI_RERANK_RESPONSE = {"type": "array", "items": _object({"index": _COUNT, "score": _N}, {"text": _S})}
_PIECE = _object({"id": _COUNT, "piece": {"anyOf": [_S, {"type": "array", "items": _COUNT}]}})
TOKENIZE_RESPONSE = _object({"tokens": {"anyOf": [{"type": "array", "items": _COUNT},
                                                  {"type": "array", "items": _PIECE}]}}, {"model": _S})
DETOKENIZE_RESPONSE = _object({"content": _S}, {"model": _S})
VERSION = _object({"version": _S})
BLOB = _object({"digest": _S})

_OA_USAGE = _object({"prompt_tokens": _COUNT, "completion_tokens": _COUNT, "total_tokens": _COUNT},
                    {"prompt_tokens_details": _object({"cached_tokens": _COUNT})})
_OA_TOOL_CALL = _object({"id": _S, "type": {"const": "function"},
                         "function": _object({"name": _S, "arguments": _S})}, {"index": _I})
_OA_LOGPROBS = {"type": ["object", "null"], "properties": {"content": {"type": "array", "items": _LOGPROB}}}
_FINISH = {"enum": ["stop", "length", "tool_calls"]}
_CHAT_HEAD = {"id": _S, "created": _I, "model": _S}
CHAT_COMPLETION = _object({
    **_CHAT_HEAD, "object": {"const": "chat.completion"}, "usage": _OA_USAGE,
    "choices": {"type": "array", "items": _object(
        {"index": _I, "finish_reason": _FINISH,
         "message": _object({"role": {"const": "assistant"}, "content": _S},
                            {"reasoning": _S, "tool_calls": {"type": "array", "items": _OA_TOOL_CALL}})},
        {"logprobs": _OA_LOGPROBS})}}, {"system_fingerprint": _S})
CHAT_COMPLETION_CHUNK = _object({
    **_CHAT_HEAD, "object": {"const": "chat.completion.chunk"},
    "choices": {"type": "array", "items": _object(
        {"index": _I, "finish_reason": {"anyOf": [_FINISH, {"type": "null"}]},
         "delta": {"type": "object", "properties": {
             "role": {"const": "assistant"}, "content": _S, "reasoning": _S,
             "tool_calls": {"type": "array", "items": _OA_TOOL_CALL}}}},
        {"logprobs": _OA_LOGPROBS})}}, {"system_fingerprint": _S, "usage": _OA_USAGE})
_LEGACY_LOGPROBS = {"type": ["object", "null"], "properties": {
    "tokens": {"type": "array", "items": _S}, "token_logprobs": {"type": "array", "items": _N},
    "top_logprobs": {"type": "array", "items": {"type": "object", "additionalProperties": _N}},
    "text_offset": {"type": "array", "items": _I}}}
_COMPLETION_CHOICES = {"type": "array", "items": _object(
    {"text": _S, "index": _I, "logprobs": _LEGACY_LOGPROBS, "finish_reason": {"anyOf": [_FINISH, {"type": "null"}]}})}
COMPLETION = _object({**_CHAT_HEAD, "object": {"const": "text_completion"}, "choices": _COMPLETION_CHOICES},
                     {"system_fingerprint": _S, "usage": _OA_USAGE})
EMBEDDING_LIST = _object({
    "object": {"const": "list"}, "model": _S,
    "data": {"type": "array", "items": _object({"object": {"const": "embedding"}, "index": _I,
                                                "embedding": {"anyOf": [{"type": "array", "items": _N}, _S]}})},
    "usage": _object({"prompt_tokens": _COUNT, "total_tokens": _COUNT})})
MODEL = _object({"id": _S, "object": {"const": "model"}, "created": _I, "owned_by": _S})
MODEL_LIST = _object({"object": {"const": "list"}, "data": {"type": ["array", "null"], "items": MODEL}})

_USAGE_ROW = {"requests": _COUNT, "prompt_tokens": _COUNT, "cached_tokens": _COUNT, "completion_tokens": _COUNT,
              "total_tokens": _COUNT, "total_duration": _COUNT, "cost": {"type": "number", "minimum": 0}}
USAGE = _object({"object": {"const": "usage"}, "start": _NULLABLE_S, "end": _NULLABLE_S, "model": _NULLABLE_S,
                 "data": {"type": "array", "items": _object(
                     {"model": _S, **_USAGE_ROW, "first": _NULLABLE_S, "last": _NULLABLE_S})},
                 "totals": _object(_USAGE_ROW)})
HEALTH = _object({"status": {"enum": ["ok", "unavailable"]}, "ready": _B, "version": _S, "uptime": _N,
                  "models_loaded": {"type": "array", "items": _S}, "running": _COUNT, "waiting": _COUNT,
                  "queue_capacity": _COUNT}, {"reasons": {"type": "array", "items": _S}})
OPENAPI = _object({"openapi": _S, "info": _OBJ, "paths": _OBJ})

_RS_TEXT = _object({"type": {"enum": ["output_text", "reasoning_text"]}, "text": _S},
                   {"annotations": {"type": "array"}, "logprobs": {"type": "array"}})
_RS_ITEM = {"anyOf": [
    _object({"id": _S, "type": {"const": "message"}, "role": {"const": "assistant"}, "status": _S,
             "content": {"type": "array", "items": _RS_TEXT}}),
    _object({"id": _S, "type": {"const": "reasoning"}, "summary": {"type": "array"},
             "content": {"type": "array", "items": _RS_TEXT}}, {"status": _S}),
    _object({"id": _S, "type": {"const": "function_call"}, "status": _S, "call_id": _S, "name": _S,
             "arguments": _S}, {"namespace": _S}),
    _object({"id": _S, "type": {"const": "custom_tool_call"}, "status": _S, "call_id": _S, "name": _S,
             "input": _S}, {"namespace": _S}),
    _object({"id": _S, "type": {"const": "local_shell_call"}, "status": _S, "call_id": _S,
             "action": _object({"type": {"const": "exec"}, "command": {"type": "array", "items": _S}})})]}
_RS_USAGE = _object({"input_tokens": _COUNT, "output_tokens": _COUNT, "total_tokens": _COUNT,
                     "input_tokens_details": _object({"cached_tokens": _COUNT}),
                     "output_tokens_details": _object({"reasoning_tokens": _COUNT})})
RESPONSE = _object(
    {"id": _S, "object": {"const": "response"}, "created_at": _I,
     "status": {"enum": ["in_progress", "completed", "incomplete", "failed"]}, "model": _S,
     "output": {"type": "array", "items": _RS_ITEM}, "output_text": _S, "tools": {"type": "array"},
     "tool_choice": {"type": ["string", "object"]}, "parallel_tool_calls": _B, "store": _B},
    {"usage": {"anyOf": [_RS_USAGE, {"type": "null"}]}, "previous_response_id": _NULLABLE_S,
     "instructions": _NULLABLE_S, "incomplete_details": {"type": ["object", "null"]},
     "error": {"type": ["object", "null"]}, "text": _OBJ, "reasoning": _OBJ})
RESPONSE_EVENT = _object(  # one server-sent event of a streamed response (the data; its event line names the type)
    {"type": {"enum": ["response.created", "response.in_progress", "response.output_item.added",
                       "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                       "response.reasoning_text.delta", "response.reasoning_text.done",
                       "response.function_call_arguments.delta", "response.function_call_arguments.done",
                       "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
                       "response.content_part.done", "response.output_item.done", "response.completed",
                       "response.failed", "error"]},
     "sequence_number": _COUNT},
    {"response": RESPONSE, "output_index": _COUNT, "content_index": _COUNT, "item_id": _S, "item": _RS_ITEM,
     "part": _RS_TEXT, "delta": _S, "text": _S, "arguments": _S, "input": _S, "message": _S})
RESPONSE_DELETED = _object({"id": _S, "object": {"const": "response"}, "deleted": {"const": True}})

_AN_USAGE = _object({"input_tokens": _COUNT, "output_tokens": _COUNT, "cache_creation_input_tokens": _COUNT,
                     "cache_read_input_tokens": _COUNT})
_AN_OUT_BLOCK = {"anyOf": [
    _object({"type": {"const": "text"}, "text": _S}),
    _object({"type": {"const": "thinking"}, "thinking": _S, "signature": _S}),
    _object({"type": {"const": "tool_use"}, "id": _S, "name": _S, "input": _OBJ})]}
_AN_STOP = {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", None]}
_AN_FAILURE = _object({"type": _S, "message": _S})
AN_MESSAGE = _object({"id": _S, "type": {"const": "message"}, "role": {"const": "assistant"}, "model": _S,
                      "content": {"type": "array", "items": _AN_OUT_BLOCK}, "stop_reason": _AN_STOP,
                      "stop_sequence": _NULLABLE_S, "usage": _AN_USAGE})
AN_EVENT = _object(  # one server-sent event of a streamed message (the data; its event line names the type)
    {"type": {"enum": ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                       "message_delta", "message_stop", "ping", "error"]}},
    {"message": AN_MESSAGE, "index": _COUNT, "content_block": _AN_OUT_BLOCK, "usage": _AN_USAGE,
     "delta": {"type": "object", "properties": {
         "type": {"enum": ["text_delta", "thinking_delta", "input_json_delta"]}, "text": _S, "thinking": _S,
         "partial_json": _S, "stop_reason": _AN_STOP, "stop_sequence": _NULLABLE_S}},
     "error": _AN_FAILURE})
AN_COUNT = _object({"input_tokens": _COUNT})
AN_ERROR = _object({"type": {"const": "error"}, "error": _AN_FAILURE})

RESPONSES: dict[str, dict[str, Any]] = {
    "Error": ERROR, "OpenAIError": OA_ERROR,
    "GenerateResponse": GENERATE_RESPONSE, "ChatResponse": CHAT_RESPONSE, "EmbedResponse": EMBED_RESPONSE,
    "EmbeddingsResponse": EMBEDDINGS_RESPONSE, "StatusResponse": STATUS, "TagsResponse": TAGS,
    "ShowResponse": SHOW_RESPONSE, "PsResponse": PS, "VersionResponse": VERSION, "BlobResponse": BLOB,
    "ChatCompletion": CHAT_COMPLETION, "ChatCompletionChunk": CHAT_COMPLETION_CHUNK, "Completion": COMPLETION,
    "EmbeddingList": EMBEDDING_LIST, "Model": MODEL, "ModelList": MODEL_LIST, "UsageResponse": USAGE,
    "HealthResponse": HEALTH, "OpenAPIDocument": OPENAPI, "Response": RESPONSE,
    "ResponseStreamEvent": RESPONSE_EVENT, "ResponseDeleted": RESPONSE_DELETED,
    "Message": AN_MESSAGE, "MessageStreamEvent": AN_EVENT, "CountTokensResponse": AN_COUNT,
    "AnthropicError": AN_ERROR, "RerankResponse": RERANK_RESPONSE,
    "RerankOrTeiResponse": {"anyOf": [RERANK_RESPONSE, TEI_RERANK_RESPONSE]}, "TokenizeResponse": TOKENIZE_RESPONSE,
    "DetokenizeResponse": DETOKENIZE_RESPONSE,
}
SCHEMAS: dict[str, dict[str, Any]] = {**REQUESTS, **RESPONSES}
_VALIDATORS = {name: Draft202012Validator(schema) for name, schema in SCHEMAS.items()}


def schema_of(name: str) -> dict[str, Any]:
    return SCHEMAS[name]


def _path(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "body"


def _required_choice(error: ValidationError) -> str | None:
    """The first name of an ``anyOf`` of required fields (``model`` or ``name``), when that is what failed."""
    choices = error.validator_value if error.validator == "anyOf" else None
    if isinstance(choices, list) and choices and all(set(c) == {"required"} for c in choices):
        return str(choices[0]["required"][0])
    return None


def _message(error: ValidationError) -> str:
    where = _path(error)
    if error.validator == "minItems" and error.instance == []:
        return f"[] is too short - '{where}'"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{missing} is required" if where == "body" else f"{where}.{missing} is required"
    if (choice := _required_choice(error)) is not None:
        return f"{choice} is required" if where == "body" else f"{where}.{choice} is required"
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
