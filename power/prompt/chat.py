"""Build the prompt for ``/api/chat`` and ``/api/generate`` the way Ollama does.

Template precedence: the Go TEMPLATE (Modelfile or registry layer); else the
GGUF's Jinja ``tokenizer.chat_template``; else a built-in format chosen from
the metadata. A Go template that reads ``.Messages`` renders once over the
collated messages; an older one that does not renders once per turn with
``.System``/``.Prompt``/``.Response``, stopping at ``.Response`` on the last.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from power.errors import InvalidRequest, TemplateError
from power.prompt.builtin import builtin_format, fim_template
from power.prompt.capabilities import capabilities_of
from power.prompt.go.template import GoTemplate, parse_template
from power.prompt.jinja import JinjaTemplate, TemplateRefused, is_jinja, parse_jinja
from power.prompt.limits import Budget
from power.prompt.messages import (
    Message,
    collate,
    default_image_marker,
    go_message,
    hf_messages,
    hf_tools,
    normalize,
    normalize_tools,
    with_image_markers,
)

__all__ = [
    "IMAGE_TOKENS",
    "ChatPrompt",
    "TemplateSource",
    "build_chat",
    "model_templates",
    "render_chat",
    "render_generate",
    "rendering_template",
    "think_values",
]

IMAGE_TOKENS = 768  # what Ollama counts per image when fitting a prompt into num_ctx
THINK_LEVELS = ("low", "medium", "high", "max")


@dataclass(frozen=True)
class TemplateSource:
    """Where a model's prompt format comes from.

    ``go``: TEMPLATE text (Go). ``jinja``: GGUF ``tokenizer.chat_template``.
    ``metadata``: GGUF metadata (architecture, tokens) for the built-in choice.
    ``prefer_go``: None follows Ollama (Go wins unless Jinja can do more);
    True/False force one (``OLLAMA_GO_TEMPLATE``). ``model`` names errors.
    """

    go: str | None = None
    jinja: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    bos_token: str | None = None
    eos_token: str | None = None
    model: str = ""
    prefer_go: bool | None = None

    @functools.cached_property
    def kind(self) -> str:
        """``"go"``, ``"jinja"`` or ``"builtin"``: which template renders."""
        if self.go and self.jinja and self.prefer_go is None:
            go_caps, jinja_caps = capabilities_of(self.go, None), capabilities_of(None, self.jinja)
            return "jinja" if jinja_caps > go_caps else "go"
        if self.go and self.prefer_go is not False:
            return "go"
        if self.jinja:
            return "jinja"
        return "go" if self.go else "builtin"

    def go_template(self, override: str | None = None) -> GoTemplate:
        """The Go template to render (override, TEMPLATE, or the built-in format)."""
        text = override if override is not None else self.go if self.kind == "go" else None
        if text is None:
            text = builtin_format(self.metadata).template
        return self.guard(lambda: _with_response(text))

    def jinja_template(self) -> JinjaTemplate:
        return self.guard(lambda: parse_jinja(self.jinja or ""))

    def special_token(self, which: str) -> str:
        given = self.bos_token if which == "bos" else self.eos_token
        if given is not None:
            return given
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        index = self.metadata.get(f"tokenizer.ggml.{which}_token_id")
        if isinstance(tokens, (list, tuple)) and isinstance(index, int) and 0 <= index < len(tokens):
            return str(tokens[index])
        return ""

    def guard(self, work: Callable[[], Any]) -> Any:
        """Run ``work``, naming the model in any ``TemplateError`` it raises."""
        try:
            return work()
        except TemplateError as exc:
            if self.model and not str(exc).startswith("model "):
                raise TemplateError(f"model {self.model!r}: {exc}") from exc
            raise


def model_templates(template: str | None, chat_template: str | None) -> tuple[str | None, str | None]:
    """A model's (Go, Jinja) templates from its TEMPLATE layer and its GGUF's chat template.

    A Jinja TEMPLATE (a Modelfile copied from ``show``) takes the GGUF template's place.
    """
    if template is not None and is_jinja(template):
        return None, template
    return template, chat_template


def rendering_template(template: str | None, chat_template: str | None) -> tuple[str | None, str | None]:
    """Of ``model_templates``, only the one that renders (``TemplateSource.kind``): what ``show`` reports."""
    go, jinja = model_templates(template, chat_template or None)
    if go is not None and jinja:
        return (None, jinja) if TemplateSource(go=go, jinja=jinja).kind == "jinja" else (go, None)
    return go, jinja


def _with_response(text: str) -> GoTemplate:
    tmpl = parse_template(text)
    if not tmpl.uses("Messages") and not tmpl.uses("Response"):
        # Ollama appends {{ .Response }} so legacy templates continue after the prompt.
        tmpl = parse_template(text + "{{ .Response }}")
    return tmpl


@dataclass(frozen=True)
class ChatPrompt:
    """A rendered chat prompt: its text, the images its markers refer to, messages dropped."""
    text: str
    images: list[Any]
    truncated: int = 0


def think_values(think: bool | str | None) -> dict[str, Any]:
    """``.Think``, ``.ThinkLevel`` and ``.IsThinkSet`` for a request's ``think``."""
    if think is None:
        return {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
    if isinstance(think, bool):
        return {"Think": think, "ThinkLevel": "medium" if think else "", "IsThinkSet": True}
    if isinstance(think, str) and think in THINK_LEVELS:
        return {"Think": True, "ThinkLevel": think, "IsThinkSet": True}
    raise InvalidRequest(f"invalid think value {think!r}: use true, false, low, medium, high or max")


def _render_go(tmpl: GoTemplate, msgs: Sequence[Message], tools: list[dict[str, Any]],
               think: bool | str | None) -> str:
    thinking = think_values(think)
    if tmpl.uses("Messages"):
        system, merged = collate(msgs)
        return tmpl.render({"System": system, "Messages": [go_message(m) for m in merged],
                            "Tools": tools, "Response": "", "Prompt": "", **thinking})
    # Legacy mode: one run per turn; the last run stops at {{ .Response }}.
    budget = Budget(tmpl.limits)
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(tmpl.render({**turn, "Tools": tools, **thinking}, budget=budget))
        turn.update(System="", Prompt="", Response="")

    for msg in msgs:
        if msg.role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = msg.content
        elif msg.role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = msg.content
        elif msg.role == "assistant":
            turn["Response"] = msg.content
    out.append(tmpl.render({**turn, "Tools": tools, **thinking}, cut_at_response=True,
                           budget=budget))
    return "".join(out)


def _render_jinja(source: TemplateSource, msgs: Sequence[Message], tools: list[dict[str, Any]],
                  think: bool | str | None, extra: Mapping[str, Any]) -> str:
    prefill = ""
    if msgs and msgs[-1].role == "assistant" and not msgs[-1].tool_calls:
        # Continue a partial assistant turn: render up to it, then append its text.
        prefill, msgs = msgs[-1].content, msgs[:-1]
    now = _dt.datetime.now()
    variables: dict[str, Any] = {
        "tools": hf_tools(tools) or None,
        "add_generation_prompt": True,
        "bos_token": source.special_token("bos"),
        "eos_token": source.special_token("eos"),
        # What llama.cpp's chat layer also passes (Firefunction reads these).
        "datetime": now.strftime("%b %d %Y"),
        "date_string": now.strftime("%d %b %Y"),
        "functions": json.dumps([t.get("function", t) for t in tools], ensure_ascii=False,
                                indent=4) if tools else "",
    }
    if think is not None:
        variables["enable_thinking"] = bool(think)
        if isinstance(think, str):
            variables["reasoning_effort"] = think
    variables.update(extra)
    template = source.jinja_template()
    try:
        return template.render(messages=hf_messages(msgs), **variables) + prefill
    except TemplateRefused:
        if len(msgs) < 2 or msgs[0].role != "system":
            raise
        # As llama.cpp, for templates without a system role: into the first turn it goes.
        first = msgs[1]
        merged = [replace(first, content=msgs[0].content + "\n" + first.content), *msgs[2:]]
        return template.render(messages=hf_messages(merged), **variables) + prefill


def _renderer(source: TemplateSource, tools: list[dict[str, Any]], think: bool | str | None,
              jinja_vars: Mapping[str, Any]) -> Callable[[Sequence[Message]], str]:
    if source.kind == "jinja":
        return lambda msgs: source.guard(
            lambda: _render_jinja(source, msgs, tools, think, jinja_vars))
    tmpl = source.go_template()
    return lambda msgs: source.guard(lambda: _render_go(tmpl, msgs, tools, think))


def _with_system(messages: list[Message], system_default: str | None,
                 history: Iterable[Any]) -> list[Message]:
    msgs = normalize(history) + messages
    if system_default and (not messages or messages[0].role != "system"):
        msgs.insert(0, Message("system", system_default))
    return msgs


def build_chat(source: TemplateSource, messages: Iterable[Any], *, tools: Any = None,
               think: bool | str | None = None, system_default: str | None = None,
               history: Iterable[Any] = (), num_ctx: int | None = None,
               count_tokens: Callable[[str], int] | None = None, truncate: bool = True,
               image_tokens: int = IMAGE_TOKENS,
               image_marker: Callable[[int], str] = default_image_marker,
               jinja_vars: Mapping[str, Any] | None = None) -> ChatPrompt:
    """Render a chat request into a prompt, truncated to ``num_ctx`` tokens if asked.

    ``system_default`` is the Modelfile SYSTEM (used when the first request message is
    not a system message); ``history`` the Modelfile MESSAGEs. With ``num_ctx`` and
    ``count_tokens``, the oldest non-system messages are dropped until the prompt fits;
    the system messages and the last message are always kept.
    """
    msgs = _with_system(normalize(messages), system_default, history)
    render = _renderer(source, normalize_tools(tools), think, jinja_vars or {})

    def attempt(window: list[Message]) -> tuple[str, list[Any]]:
        marked, images = with_image_markers(window, image_marker)
        return render(marked), images

    if not (truncate and num_ctx is not None and count_tokens is not None):
        text, images = attempt(msgs)
        return ChatPrompt(text, images)
    # As Ollama: grow the window from the newest message back while it still fits.
    keep = max(len(msgs) - 1, 0)
    fitted: tuple[str, list[Any]] | None = None
    for i in range(len(msgs) - 2, -1, -1):
        candidate = attempt(_window(msgs, i))
        if count_tokens(candidate[0]) + image_tokens * len(candidate[1]) > num_ctx:
            break
        keep, fitted = i, candidate
    window = _window(msgs, keep)
    text, images = fitted or attempt(window)
    return ChatPrompt(text, images, len(msgs) - len(window))


def _window(msgs: list[Message], start: int) -> list[Message]:
    """The messages from ``start`` on, with every earlier system message in front."""
    return [m for m in msgs[:start] if m.role == "system"] + msgs[start:]


def render_chat(source: TemplateSource, messages: Iterable[Any], **options: Any) -> str:
    """Render a chat request into prompt text (see ``build_chat`` for the options)."""
    return build_chat(source, messages, **options).text


def render_generate(source: TemplateSource, prompt: str, *, system: str | None = None,
                    template: str | None = None, suffix: str | None = None, raw: bool = False,
                    images: Sequence[Any] = (), think: bool | str | None = None,
                    system_default: str | None = None, history: Iterable[Any] = (),
                    context: str | None = None, tools: Any = None,
                    image_marker: Callable[[int], str] = default_image_marker) -> str:
    """Render a ``/api/generate`` request into prompt text.

    ``raw`` returns the prompt untouched; ``template``/``system`` override the model's;
    ``suffix`` asks for fill-in-the-middle; ``context`` is the detokenised text of the
    deprecated ``context`` tokens, put in front (and then MESSAGE history is left out).
    """
    if raw:
        if template or system or context:
            raise InvalidRequest("raw mode does not support template, system, or context")
        return prompt
    if suffix:
        return (context or "") + _render_fim(source, prompt, suffix, template)
    msgs: list[Message] = []
    if system or system_default:
        msgs.append(Message("system", system or system_default or ""))
    if not context:
        msgs += normalize(history)
    msgs += [Message("user", "", images=(image,)) for image in images]
    msgs.append(Message("user", prompt))
    if template is not None:
        tmpl = source.guard(lambda: _with_response(template))
        marked, _ = with_image_markers(msgs, image_marker)
        text = source.guard(lambda: _render_go(tmpl, marked, normalize_tools(tools), think))
    else:
        text = build_chat(source, msgs, tools=tools, think=think,
                          image_marker=image_marker).text
    return (context or "") + text


def _render_fim(source: TemplateSource, prompt: str, suffix: str, override: str | None) -> str:
    text = override if override is not None else source.go if source.kind == "go" else None
    if text is None or "Suffix" not in source.guard(lambda: parse_template(text)).vars:
        text = fim_template(source.metadata)
    if text is None:
        raise InvalidRequest(f"{source.model or 'model'} does not support insert")
    tmpl = source.guard(lambda: parse_template(text))
    return source.guard(lambda: tmpl.render({"Prompt": prompt, "Suffix": suffix, "Response": ""}))
