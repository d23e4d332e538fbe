"""Built-in prompt formats for models that carry no template of their own.

A model with neither a Go TEMPLATE nor a GGUF ``tokenizer.chat_template`` gets
one of these, chosen from its metadata (special tokens first, then the
architecture). They are written as Go templates in Messages mode, so they go
through the same renderer, truncation and tool-call machinery as Ollama's own.
``fim_template`` does the same for fill-in-the-middle from the FIM tokens.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FORMATS", "BuiltinFormat", "builtin_format", "fim_template", "vocabulary"]


@dataclass(frozen=True)
class BuiltinFormat:
    name: str
    template: str  # Go template text
    stop: tuple[str, ...]


_CHATML = """\
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{{ . }}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""

_LLAMA3 = """\
{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>

{{ if .System }}{{ .System }}{{ end }}
{{- if .Tools }}

You have access to the following functions. To call a function, respond with JSON of the form \
{"name": function name, "parameters": dictionary of argument name and its value}.

{{ range .Tools }}{{ . }}
{{ end }}{{ end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", \
"parameters": {{ .Function.Arguments }}}{{ end }}{{ else }}{{ .Content }}{{ end }}
{{- if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}"""

_LLAMA2 = """\
{{- $first := true }}
{{- range .Messages }}
{{- if eq .Role "user" }}[INST] {{ if and $first $.System }}<<SYS>>
{{ $.System }}
<</SYS>>

{{ end }}{{ $first = false }}{{ .Content }} [/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s><s>
{{- end }}
{{- end }}"""

_MISTRAL = """\
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}
{{- if and $.Tools $last }}[AVAILABLE_TOOLS] {{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System $last }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range $k, $_ := .ToolCalls }}{{ if $k }}, {{ end }}{"name": "{{ .Function.Name }}", \
"arguments": {{ .Function.Arguments }}}
{{- end }}]
{{- end }}</s>
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ json .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}"""

_PHI3 = """\
{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ end }}<|assistant|>
"""

_GEMMA = """\
{{- $first := true }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- else if ne .Role "system" }}<start_of_turn>user
{{ if and $first $.System }}{{ $.System }}

{{ end }}{{ $first = false }}{{ .Content }}<end_of_turn>
{{ end }}
{{- if and $last (ne .Role "assistant") }}<start_of_turn>model
{{ end }}
{{- end }}"""

_GENERIC = """\
{{- range .Messages }}
{{- if eq .Role "system" }}System: {{ else if eq .Role "assistant" }}Assistant: \
{{ else if eq .Role "tool" }}Tool: {{ else }}User: {{ end }}{{ .Content }}
{{ end }}Assistant:"""

FORMATS: dict[str, BuiltinFormat] = {f.name: f for f in (
    BuiltinFormat("chatml", _CHATML, ("<|im_start|>", "<|im_end|>")),
    BuiltinFormat("llama3", _LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    BuiltinFormat("llama2", _LLAMA2, ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")),
    BuiltinFormat("mistral", _MISTRAL, ("[INST]", "[/INST]")),
    BuiltinFormat("phi3", _PHI3, ("<|end|>", "<|user|>", "<|assistant|>")),
    BuiltinFormat("gemma", _GEMMA, ("<end_of_turn>", "<start_of_turn>")),
    BuiltinFormat("generic", _GENERIC, ("\nUser:", "\nSystem:")),
)}


# Building a set of a 262k-token vocabulary costs tens of milliseconds: keep the last few, keyed by the
# token list they came from (the server caches parsed GGUF metadata, so the same list comes back).
_VOCABS: dict[int, tuple[object, frozenset[str]]] = {}


def vocabulary(metadata: Mapping[str, Any]) -> Collection[str]:
    """The model's token strings as a set (empty when the metadata has none)."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, (list, tuple)):
        hit = _VOCABS.get(id(tokens))
        if hit is not None and hit[0] is tokens:
            return hit[1]
        vocab = frozenset(t for t in tokens if isinstance(t, str))
        while len(_VOCABS) >= 8:
            _VOCABS.pop(next(iter(_VOCABS)), None)
        _VOCABS[id(tokens)] = (tokens, vocab)  # holding the list keeps its id from being reused
        return vocab
    if isinstance(tokens, (set, frozenset)):
        return tokens
    return frozenset()


def builtin_format(metadata: Mapping[str, Any],
                   tokens: Collection[str] | None = None) -> BuiltinFormat:
    """Choose the built-in format that fits a model, from its GGUF metadata."""
    vocab = vocabulary(metadata) if tokens is None else tokens
    arch = str(metadata.get("general.architecture", "")).lower()
    if "<|im_start|>" in vocab or arch in ("qwen", "qwen2", "qwen2moe", "qwen3", "qwen3moe"):
        return FORMATS["chatml"]
    if "<|start_header_id|>" in vocab:
        return FORMATS["llama3"]
    if "<start_of_turn>" in vocab or arch.startswith("gemma"):
        return FORMATS["gemma"]
    if ("<|user|>" in vocab and "<|end|>" in vocab) or arch in ("phi3", "phimoe"):
        return FORMATS["phi3"]
    if "[INST]" in vocab or arch in ("mistral", "mistral3"):
        return FORMATS["mistral"]
    if arch == "llama" and metadata.get("tokenizer.ggml.model") == "llama":
        return FORMATS["llama2"]
    return FORMATS["generic"]


# (prefix, suffix, middle) token spellings of the common code-model families.
_FIM_TOKENS = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, StarCoder2
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),  # CodeLlama
)


def fim_template(metadata: Mapping[str, Any],
                 tokens: Collection[str] | None = None) -> str | None:
    """A Go template for fill-in-the-middle (``.Prompt``/``.Suffix``), if the model has FIM tokens."""
    vocab = vocabulary(metadata) if tokens is None else tokens
    names = metadata.get("tokenizer.ggml.tokens")
    ids = [metadata.get(f"tokenizer.ggml.fim_{k}_token_id") for k in ("pre", "suf", "mid")]
    if isinstance(names, (list, tuple)) and all(isinstance(i, int) and 0 <= i < len(names)
                                                 for i in ids):
        pre, suf, mid = (str(names[i]) for i in ids)  # type: ignore[index]
    else:
        for pre, suf, mid in _FIM_TOKENS:
            if pre in vocab and suf in vocab and mid in vocab:
                break
        else:
            return None
    if pre.startswith("▁"):  # CodeLlama's tokens carry their own leading space
        return (f"{pre[1:]} {{{{ .Prompt }}}} {suf[1:]}{{{{ .Suffix }}}} {mid[1:]}")
    return f"{pre}{{{{ .Prompt }}}}{suf}{{{{ .Suffix }}}}{mid}"
