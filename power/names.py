"""Model names: parse, validate, display, and map to a manifest path.

A name is ``[scheme://][host/][namespace/]model[:tag]`` with Ollama's defaults
(``registry.ollama.ai``, ``library``, ``latest``, https). Every part is checked
against Ollama's character and length rules before any path is built from it,
so a valid name can never escape the manifests folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from power.errors import InvalidName

__all__ = [
    "DEFAULT_HOST", "DEFAULT_NAMESPACE", "DEFAULT_TAG", "DEFAULT_SCHEME",
    "ModelName", "parse_name", "is_valid_name",
]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"

_MAX_LEN = {"host": 350, "namespace": 80, "model": 80, "tag": 80}
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# Characters allowed after the first one, per part; the first is always [A-Za-z0-9_].
_REST = {
    "host": _ALNUM | frozenset("-.:"),
    "namespace": _ALNUM | frozenset("-"),
    "model": _ALNUM | frozenset("-."),
    "tag": _ALNUM | frozenset("-."),
}


def _valid_part(kind: str, value: str) -> bool:
    if not 1 <= len(value) <= _MAX_LEN[kind]:
        return False
    if value[0] not in _ALNUM:
        return False
    allowed = _REST[kind]
    return all(c in allowed for c in value[1:])


@dataclass(frozen=True)
class ModelName:
    """A fully qualified, validated model name.

    Equality and hashing are case-sensitive on the stored casing; use
    :meth:`matches` (or :meth:`key`) for Ollama's case-insensitive comparison.
    The scheme only matters to registry transfers and is ignored by equality.
    """

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = field(default=DEFAULT_SCHEME, compare=False)

    def __post_init__(self) -> None:
        for kind in ("host", "namespace", "model", "tag"):
            if not _valid_part(kind, getattr(self, kind)):
                raise InvalidName()
        if self.scheme not in ("http", "https"):
            raise InvalidName()

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    def key(self) -> tuple[str, str, str, str]:
        """Return the case-folded parts, the identity Ollama compares names by."""
        return tuple(p.casefold() for p in self.parts)  # type: ignore[return-value]

    def matches(self, other: ModelName) -> bool:
        return self.key() == other.key()

    def display(self) -> str:
        """Return the shortest form Ollama shows (``model:tag``, ``ns/model:tag`` ...)."""
        if self.host.casefold() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.casefold() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def full(self) -> str:
        """Return ``host/namespace/model:tag``."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def repository(self) -> str:
        """Return ``namespace/model``, the registry repository path."""
        return f"{self.namespace}/{self.model}"

    def manifest_relpath(self) -> Path:
        """Return ``host/namespace/model/tag`` relative to ``manifests/``."""
        return Path(self.host, self.namespace, self.model, self.tag)

    def with_parts(self, host: str, namespace: str, model: str, tag: str) -> ModelName:
        return ModelName(host, namespace, model, tag, scheme=self.scheme)

    def __str__(self) -> str:
        return self.display()


def _cut_last(s: str, sep: str) -> tuple[str, str] | None:
    """Split at the last ``sep``; None when absent; raise when a side is empty."""
    i = s.rfind(sep)
    if i < 0:
        return None
    before, after = s[:i], s[i + len(sep):]
    if not before or not after:
        raise InvalidName()
    return before, after


def parse_name(text: str) -> ModelName:
    """Parse and validate a model name, filling Ollama's defaults.

    Raises :class:`InvalidName` for any violation, including an empty part after
    a separator (``ns/``, ``model:``), digests (``@sha256:...``), NUL or
    whitespace, and parts that are too long.
    """
    if not isinstance(text, str) or not text or len(text) > 600:
        raise InvalidName()
    s = text
    scheme = DEFAULT_SCHEME
    if "://" in s:
        scheme, s = s.split("://", 1)
        if scheme not in ("http", "https"):
            raise InvalidName()
    tag = DEFAULT_TAG
    # "/" cannot appear in a tag, so a ":" after the last "/" starts the tag and
    # "host:port/ns/model" keeps its port.
    if s.rfind(":") > s.rfind("/"):
        cut = _cut_last(s, ":")
        assert cut is not None
        s, tag = cut
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    cut = _cut_last(s, "/")
    if cut is None:
        model = s
    else:
        s, model = cut
        cut = _cut_last(s, "/")
        if cut is None:
            namespace = s
        else:
            host, namespace = cut
    return ModelName(host, namespace, model, tag, scheme=scheme)


def is_valid_name(text: str) -> bool:
    try:
        parse_name(text)
    except InvalidName:
        return False
    return True
