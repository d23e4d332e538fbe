"""Render a GGUF ``tokenizer.chat_template`` (Jinja) in a bounded sandbox.

The environment is jinja2's ``SandboxedEnvironment`` with the globals chat
templates expect (``raise_exception``, ``strftime_now``, HF-style ``tojson``,
``loopcontrols``, Hugging Face's ``{% generation %}`` tag). Lists and dicts the
template builds itself may be changed (``append``, ``update``, ``pop``...), as
llama.cpp's Jinja allows; what the caller passed in stays immutable. Every block body the compiler emits starts with
a call that counts a step and checks the deadline, so a template cannot loop
for long even without writing anything; string repetition, ``%`` formatting
and the padding filters are capped so no single expression can build a huge
string. Output is consumed as a stream and cut at the size limit.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import functools
import json
import operator
import re
from typing import Any, NoReturn

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import SandboxedEnvironment, modifies_known_mutable

from power.errors import TemplateError
from power.prompt.go.template import parse_template
from power.prompt.limits import DEFAULT_LIMITS, Budget, Limits

__all__ = ["JinjaTemplate", "TemplateRefused", "is_jinja", "parse_jinja"]

_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("jinja_budget", default=None)
# ids of the containers passed in to the render under way: those stay immutable.
_inputs: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("jinja_inputs",
                                                                         default=frozenset())

# A Jinja statement or comment: Ollama's Go templates never hold one.
_JINJA_TAG = re.compile(r"\{%-?\s*[A-Za-z_]|\{#")
# Format specs with large widths ("{:>99999999}") would allocate before we can count.
_WIDE_SPEC = re.compile(r"[{%][^}%]*?\d{5,}")


class _TemplateRaised(Exception):
    """``raise_exception`` from inside a template."""


class TemplateRefused(TemplateError):
    """The template called ``raise_exception``: it refuses this conversation (a 400 with its words)."""


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick()


class _CountingCodeGenerator(CodeGenerator):
    """Emit a budget check at the start of every block body (loops, ifs, macros)."""

    def blockvisit(self, nodes: Any, frame: Any) -> None:
        self.writeline("environment.power_tick()")
        super().blockvisit(nodes, frame)


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` (HF's marker for assistant tokens): render the body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class _Undefined(jinja2.Undefined):
    """A missing field joined to a string reads as empty (as llama.cpp's Jinja), not an error."""

    def __add__(self, other: Any) -> Any:
        return other if isinstance(other, str) else super().__add__(other)

    def __radd__(self, other: Any) -> Any:
        return other if isinstance(other, str) else super().__radd__(other)


def _containers(value: Any, seen: set[int], depth: int = 0) -> None:
    if isinstance(value, (dict, list, set)) and id(value) not in seen and depth < 64:
        seen.add(id(value))
        for item in value.values() if isinstance(value, dict) else value:
            _containers(item, seen, depth + 1)


def _raise_exception(message: str = "") -> NoReturn:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    if not isinstance(fmt, str) or len(fmt) > 200:
        raise _TemplateRaised("strftime_now needs a short format string")
    return _dt.datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    # Hugging Face semantics (no HTML escaping, keys in order), which chat templates assume.
    if indent is not None and (not isinstance(indent, int) or indent > 64):
        raise _TemplateRaised("tojson indent too large")
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys,
                      ensure_ascii=ensure_ascii, default=str)


def _bounded(func: Any, limit_arg: int) -> Any:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = list(args[limit_arg:limit_arg + 1]) + list(kwargs.values())
        if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10_000 for v in values):
            raise _TemplateRaised(f"{func.__name__}: width too large")
        return func(*args, **kwargs)
    return wrapper


class _Environment(SandboxedEnvironment):
    code_generator_class = _CountingCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, limits: Limits) -> None:
        super().__init__(extensions=[loopcontrols, _GenerationTag], trim_blocks=True, lstrip_blocks=True,
                         keep_trailing_newline=False, autoescape=False,
                         undefined=_Undefined)
        self.limits = limits
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        self.filters["tojson"] = _tojson
        for name in ("center", "indent", "wordwrap", "truncate"):
            self.filters[name] = _bounded(self.filters[name], 1)
        self.filters["format"] = self._format_filter

    def power_tick(self) -> None:
        _tick()

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        result = super().call(__context, __obj, *args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (list, dict, set)):
            __self._check_size(owner)  # a template's own list may grow, not without bound
        return result

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if modifies_known_mutable(obj, attr) and id(obj) in _inputs.get():
            return False
        return super().is_safe_attribute(obj, attr, value)

    def _check_size(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple, bytes, dict, set)) and len(value) > self.limits.max_output:
            raise _TemplateRaised("expression result too large")
        return value

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        _tick()
        if operator_ == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise _TemplateRaised("exponent too large")
            return self._check_size(left ** right)
        if operator_ == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) \
                        and len(seq) * max(count, 0) > self.limits.max_output:
                    raise _TemplateRaised("repetition too large")
            return left * right
        if operator_ == "%" and isinstance(left, str) and _WIDE_SPEC.search(left):
            raise _TemplateRaised("format width too large")
        op = {"%": operator.mod, "+": operator.add}[operator_]
        return self._check_size(op(left, right))

    def _format_filter(self, value: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(value, str) and _WIDE_SPEC.search(value):
            raise _TemplateRaised("format width too large")
        return str(self._check_size(value % (kwargs or args)))

    def wrap_str_format(self, value: Any) -> Any:
        # str.format / format_map: refuse wide fields before the string is built.
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _WIDE_SPEC.search(value.__self__):
            def refuse(*args: Any, **kwargs: Any) -> NoReturn:
                raise _TemplateRaised("format width too large")
            return refuse
        return wrapped


_ENVIRONMENTS: dict[Limits, _Environment] = {}


def _environment(limits: Limits) -> _Environment:
    env = _ENVIRONMENTS.get(limits)
    if env is None:
        env = _ENVIRONMENTS.setdefault(limits, _Environment(limits))
    return env


_RENDER_ERRORS = (jinja2.TemplateError, _TemplateRaised, TypeError, ValueError, KeyError,
                  IndexError, AttributeError, ZeroDivisionError, OverflowError, RecursionError,
                  MemoryError)


class JinjaTemplate:
    """A compiled Jinja chat template."""

    def __init__(self, source: str, limits: Limits = DEFAULT_LIMITS) -> None:
        if len(source) > limits.max_source:
            raise TemplateError(f"chat template is longer than {limits.max_source} characters")
        self.source = source
        self.limits = limits
        try:
            self.template = _environment(limits).from_string(source)
        except (jinja2.TemplateSyntaxError, RecursionError, ValueError) as exc:
            raise TemplateError(f"chat template: {exc}") from exc

    def render(self, **variables: Any) -> str:
        """Render with ``variables`` (``messages``, ``tools``, ``add_generation_prompt``, ...)."""
        budget = Budget(self.limits)
        token = _budget.set(budget)
        passed: set[int] = set()
        _containers(list(variables.values()), passed)
        inputs = _inputs.set(frozenset(passed))
        out: list[str] = []
        try:
            for chunk in self.template.generate(**variables):
                budget.emit(len(chunk))
                out.append(chunk)
        except TemplateError:
            raise
        except _TemplateRaised as exc:
            raise TemplateRefused(f"chat template: {exc or 'refused the conversation'}") from exc
        except _RENDER_ERRORS as exc:
            raise TemplateError(f"chat template: {exc or type(exc).__name__}") from exc
        finally:
            _budget.reset(token)
            _inputs.reset(inputs)
        return "".join(out)


@functools.lru_cache(maxsize=32)
def parse_jinja(source: str) -> JinjaTemplate:
    """Compile (and cache) a Jinja chat template with the default limits."""
    return JinjaTemplate(source)


@functools.lru_cache(maxsize=64)
def is_jinja(text: str) -> bool:
    """Whether a TEMPLATE text is a Jinja chat template (what GGUFs carry) rather than an Ollama Go template.

    ``show`` reports a GGUF's Jinja template as the model's template, so a Modelfile
    copied from it holds Jinja: such a text has a ``{% ... %}`` statement (or a
    ``{# #}`` comment) and compiles as Jinja, or fails as Go and compiles as Jinja.
    """
    if not text or "{" not in text:
        return False
    if not _JINJA_TAG.search(text) and _compiles(parse_template, text):
        return False
    return _compiles(parse_jinja, text)


def _compiles(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except TemplateError:
        return False
    return True
