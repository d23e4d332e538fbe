"""The exception tree of a3s-power.

Every error the package raises on purpose derives from ``PowerError``; each
class knows the HTTP status it maps to and the CLI exit code::

    PowerError                      500  (exit 1)
    ├── InvalidRequest              400
    │   ├── InvalidName             400  "invalid model name"
    │   ├── ModelfileError          400
    │   ├── TemplateError           400
    │   ├── GGUFError               400  (hostile or truncated GGUF)
    │   └── InvalidDigest           400  "invalid digest format"
    ├── NotFound                    404
    │   └── ModelNotFound           404
    │   └── RequestTimeout          408  (headers or body not received in time)
    ├── Busy                        503  (queue full)
    ├── ShuttingDown                503  (SIGTERM: no new work; a balancer retries it elsewhere)
    ├── RpcUnreachable              502  (a llama.cpp RPC server did not answer)
    ├── TimedOut                    504  (no first token, or the whole request, in time)
    ├── Canceled                    499
    ├── StoreError                  500  (digest mismatch, disk full, ...)
    │   ├── DigestMismatch          400
    │   └── ManifestError           500  (corrupt manifest or config blob)
    ├── RegistryError               500
    │   └── RemoteNotFound          404  (the registry has no such model or blob)
    └── NativeError                 500  (llama.cpp said no; message from llama.cpp)
        └── EngineError             500
"""

from __future__ import annotations

__all__ = [
    "PowerError", "InvalidRequest", "InvalidName", "ModelfileError", "TemplateError",
    "GGUFError", "NotFound", "ModelNotFound", "Busy", "ShuttingDown", "RpcUnreachable", "Canceled", "StoreError", "RequestTimeout", "TimedOut",
    "DigestMismatch", "InvalidDigest", "ManifestError", "RegistryError", "RemoteNotFound", "NativeError", "EngineError",
]


class PowerError(Exception):
    """Root of every error a3s-power raises on purpose."""

    status = 500
    exit_code = 1

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.__class__.__doc__ or "error"

    def __str__(self) -> str:
        return self.message


class InvalidRequest(PowerError):
    """The request or input is malformed."""

    status = 400


class InvalidName(InvalidRequest):
    """invalid model name"""

    def __init__(self, message: str = "invalid model name") -> None:
        super().__init__(message)


class ModelfileError(InvalidRequest):
    """The Modelfile cannot be parsed."""


class TemplateError(InvalidRequest):
    """A prompt template cannot be parsed or rendered."""


class GGUFError(InvalidRequest):
    """The file is not a valid GGUF model."""


class NotFound(PowerError):
    """Not found."""

    status = 404


class ModelNotFound(NotFound):
    """The named model is not in the store."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"model '{name}' not found")
        self.name = name


class Busy(PowerError):
    """server busy, please try again.  maximum pending requests exceeded"""

    status = 503


class ShuttingDown(PowerError):
    """server is shutting down"""

    status = 503


class RpcUnreachable(PowerError):
    """A llama.cpp RPC server that a model's layers were to go to did not answer."""

    status = 502


class RequestTimeout(InvalidRequest):
    """request not received in time"""

    status = 408


class TimedOut(PowerError):
    """The request took longer than the server allows; it was cancelled."""

    status = 504


class Canceled(PowerError):
    """request canceled"""

    status = 499


class StoreError(PowerError):
    """The model store could not complete an operation."""


class StoreFull(StoreError):
    """The disk under the store is full, or would be past its reserve (HTTP 507 Insufficient Storage)."""

    status = 507


class DigestMismatch(StoreError):
    """Content does not match its digest."""

    status = 400


class InvalidDigest(InvalidRequest):
    """invalid digest format"""

    def __init__(self, message: str = "invalid digest format") -> None:
        super().__init__(message)


class ManifestError(StoreError):
    """A manifest or config blob on disk is malformed."""


class RegistryError(PowerError):
    """A registry answered with an error or could not be reached."""

    status = 502  # the upstream failed, not this server


class RemoteNotFound(RegistryError):
    """file does not exist"""

    status = 404


class NativeError(PowerError):
    """llama.cpp (through the shim) reported a failure."""

    def __init__(self, message: str, code: int = -1) -> None:
        super().__init__(message)
        self.code = code


class EngineError(NativeError):
    """The inference engine failed while serving a request."""
