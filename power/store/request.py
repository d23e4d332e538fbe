"""The create request: built from ``/api/create`` JSON or from a Modelfile on disk.

The JSON form names files by blob digest (clients upload with ``POST
/api/blobs`` first); the Modelfile form resolves ``FROM``/``ADAPTER`` paths
relative to the Modelfile, copies the files into the blob store, and produces
the same request, exactly as Ollama's CLI does before it calls the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

from power.errors import InvalidName, InvalidRequest, ModelfileError
from power.names import parse_name
from power.prompt.limits import DEFAULT_LIMITS
from power.store.blobs import BlobInfo, parse_digest
from power.store.ggml_types import parse_quantize_type
from power.store.gguf import is_gguf
from power.store.modelfile import Modelfile
from power.store.params import coerce_parameter

__all__ = ["CreateLimits", "CREATE_LIMITS", "CreateRequest", "request_from_modelfile"]


@dataclass(frozen=True)
class CreateLimits:
    """Bounds on one create request (reliability P7).

    Generous for real models (one or two licenses, a few split GGUF files, a
    short example conversation), small enough that a hostile request costs
    little work and few blobs. The template limit is the renderers' own, so
    create never stores a template that every generate would refuse.
    """

    files: int = 64  # FROM files, and adapters, each
    licenses: int = 32
    messages: int = 1024
    parameter_values: int = 256  # every value, counting each item of a list (stop)
    text: int = 1 << 20  # characters of one license, system prompt or message
    template: int = DEFAULT_LIMITS.max_source
    name: int = 1024  # characters of a file name, role, renderer, parser, requires


CREATE_LIMITS = CreateLimits()


@dataclass(frozen=True)
class CreateRequest:
    """What to create: a base (``from_`` and/or ``files``) and the layers to set on it."""

    model: str
    from_: str = ""
    files: Mapping[str, str] = field(default_factory=dict)
    adapters: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: tuple[str, ...] | None = None
    parameters: Mapping[str, Any] | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    quantize: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    # The draft model for speculative decoding: a GGUF by digest (Ollama's draft_files) or a stored model's name.
    draft_files: Mapping[str, str] = field(default_factory=dict)
    draft: str = ""
    draft_quantize: str = ""  # Ollama's: quantize the draft model to this type

    def __post_init__(self) -> None:
        _check_limits(self, CREATE_LIMITS)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CreateRequest:
        """Validate an ``/api/create`` body (``name`` is accepted for ``model``)."""
        if not isinstance(body, Mapping):
            raise InvalidRequest("request body must be a JSON object")
        model = body.get("model") or body.get("name")
        if not isinstance(model, str) or not model:
            raise InvalidName()
        parse_name(model)
        from_ = _text(body, "from")
        files = _digests(body.get("files"), "files")
        draft_files = _digests(body.get("draft_files"), "draft_files")
        draft = _text(body, "draft")
        if draft and draft_files:
            raise InvalidRequest("give the draft model as 'draft' (a model name) or 'draft_files', not both")
        if draft:
            parse_name(draft)
        if not from_ and not files:
            raise InvalidRequest("neither 'from' or 'files' was specified")
        license_ = body.get("license")
        _early_counts(body)
        if isinstance(license_, str):
            license_ = [license_]
        if license_ is not None and not (isinstance(license_, list)
                                         and all(isinstance(x, str) for x in license_)):
            raise InvalidRequest("license must be a string or a list of strings")
        params = body.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            raise InvalidRequest("parameters must be an object")
        return cls(
            model=model, from_=from_, files=files,
            adapters=_digests(body.get("adapters"), "adapters"),
            template=_text(body, "template") or None, system=_text(body, "system") or None,
            license=tuple(license_) if license_ else None,
            parameters={k: coerce_parameter(k, v) for k, v in params.items()} if params else None,
            messages=_messages(body.get("messages")),
            quantize=_quantize(_text(body, "quantize") or _text(body, "quantization")),
            renderer=_text(body, "renderer"), parser=_text(body, "parser"),
            requires=_text(body, "requires"), draft_files=draft_files, draft=draft,
            draft_quantize=_quantize(_text(body, "draft_quantize")),
        )


def _refuse_many(key: str, count: int, limit: int) -> None:
    if count > limit:
        raise InvalidRequest(f"{key} has {count} entries; at most {limit} are allowed")


def _check_text(key: str, text: str | None, limit: int) -> None:
    """Refuse text longer than ``limit``, or that no UTF-8 can hold (a lone surrogate from JSON's ``\\ud800``)."""
    if text is None:
        return
    if len(text) > limit:
        raise InvalidRequest(f"{key} is longer than {limit} characters")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InvalidRequest(f"{key} is not valid Unicode (a lone surrogate)") from None


def _early_counts(body: Mapping[str, Any]) -> None:
    """Refuse an oversized list or object of a JSON body before any work is done per item."""
    limits = CREATE_LIMITS
    for key, limit in (("license", limits.licenses), ("messages", limits.messages), ("files", limits.files),
                       ("adapters", limits.files), ("draft_files", limits.files),
                       ("parameters", limits.parameter_values)):
        value = body.get(key)
        if isinstance(value, (list, Mapping)):
            _refuse_many(key, len(value), limit)


def _check_limits(req: CreateRequest, limits: CreateLimits) -> None:
    _refuse_many("files", len(req.files), limits.files)
    _refuse_many("adapters", len(req.adapters), limits.files)
    _refuse_many("draft_files", len(req.draft_files), limits.files)
    _refuse_many("license", len(req.license or ()), limits.licenses)
    _refuse_many("messages", len(req.messages or ()), limits.messages)
    params = req.parameters or {}
    values = [(key, v) for key, value in params.items() for v in (value if isinstance(value, list) else [value])]
    _refuse_many("parameters", len(values), limits.parameter_values)
    _check_text("template", req.template, limits.template)
    _check_text("system", req.system, limits.text)
    for key in ("renderer", "parser", "requires", "draft"):
        _check_text(key, getattr(req, key), limits.name)
    for text in req.license or ():
        _check_text("license", text, limits.text)
    for name in (*req.files, *req.adapters, *req.draft_files):
        _check_text("file name", name, limits.name)
    for m in req.messages or ():
        _check_text("message role", m.get("role"), limits.name)
        _check_text("message content", m.get("content"), limits.text)
    for key, v in values:
        _check_text(f"parameter {key}", v if isinstance(v, str) else None, limits.text)


def _quantize(text: str) -> str:
    return parse_quantize_type(text) if text else ""


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string")
    _check_text(key, value, len(value))  # before an error message can echo it
    return value


def _digests(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{what} must be an object of file name to digest")
    out: dict[str, str] = {}
    for key, digest in value.items():
        p = PurePosixPath(str(key))
        if not key or p.is_absolute() or ".." in p.parts or "\\" in key or "\x00" in key:
            raise InvalidRequest(f"invalid file name {key!r}: must be a relative path")
        out[key] = parse_digest(digest)
    return out


def _messages(value: Any) -> tuple[Mapping[str, str], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequest("messages must be a list")
    out = []
    for m in value:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content", ""), str):
            raise InvalidRequest("each message needs a string role and content")
        out.append({"role": m["role"], "content": m.get("content", "")})
    return tuple(out)


def _looks_like_path(arg: str) -> bool:
    if arg.startswith(("/", "./", "../", "~", ".\\")) or arg.lower().endswith((".gguf", ".bin")):
        return True
    try:
        parse_name(arg)
    except InvalidName:
        return True
    return False


def _resolve_path(arg: str, base_dir: Path) -> Path:
    path = Path(arg).expanduser()
    return path if path.is_absolute() else base_dir / path


def request_from_modelfile(
    modelfile: Modelfile,
    model: str,
    base_dir: Path,
    add_file: Callable[[Path], BlobInfo],
    *,
    quantize: str = "",
    draft_quantize: str = "",
) -> CreateRequest:
    """Turn a parsed Modelfile into a create request, copying its files with ``add_file``.

    ``FROM`` takes a GGUF path (absolute, ``~`` or relative to ``base_dir``) or
    a model name; a path that does not exist or is not GGUF is a ModelfileError
    naming its line. ``DRAFT`` (the last one wins) takes a GGUF path or a model name the same way.
    """
    parse_name(model)
    for what in ("from", "adapter", "draft"):
        _refuse_many(what.upper(), sum(c.name == what for c in modelfile.commands), CREATE_LIMITS.files)
    licenses = modelfile.values("license")
    checked = CreateRequest(  # checks every limit before a file is copied (or uploaded, by the CLI)
        model=model, template=modelfile.last("template"), system=modelfile.last("system"),
        license=tuple(licenses) if licenses else None,
        parameters=modelfile.parameters or None,
        messages=tuple(modelfile.messages) or None,
        quantize=_quantize(quantize), draft_quantize=_quantize(draft_quantize),
        renderer=modelfile.last("renderer") or "", parser=modelfile.last("parser") or "",
        requires=modelfile.last("requires") or "",
    )
    from_ = draft_name = ""
    files: dict[str, str] = {}
    adapters: dict[str, str] = {}
    draft_files: dict[str, str] = {}
    drafts = [c for c in modelfile.commands if c.name == "draft"][-1:]
    for cmd in [c for c in modelfile.commands if c.name in ("from", "adapter")] + drafts:
        path = _resolve_path(cmd.args, base_dir)
        if not path.exists():
            if cmd.name == "adapter" or _looks_like_path(cmd.args):
                raise ModelfileError(f"(line {cmd.line}): no such file: {cmd.args}")
            if cmd.name == "draft":
                draft_name = cmd.args
                continue
            if from_:
                raise ModelfileError(f"(line {cmd.line}): only one FROM may name a model")
            from_ = cmd.args
            continue
        if path.is_dir():
            raise ModelfileError(f"(line {cmd.line}): {cmd.args} is a folder; safetensors import "
                                 "is not supported, convert the model to GGUF first")
        if not is_gguf(path):
            raise ModelfileError(f"(line {cmd.line}): {cmd.args} is not a GGUF file")
        target = {"adapter": adapters, "draft": draft_files}.get(cmd.name, files)
        key = path.name if path.name not in target else f"{len(target)}-{path.name}"
        target[key] = add_file(path).digest
    return replace(checked, from_=from_, files=files, adapters=adapters, draft_files=draft_files,
                   draft=draft_name)
