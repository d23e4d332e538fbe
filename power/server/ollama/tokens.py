"""``/api/tokenize`` and ``/api/detokenize`` (also served as llama-server's ``/tokenize`` and ``/detokenize``).

Both answer from the model's vocabulary without loading its weights when it is
not loaded, and without waiting for its generations when it is (see
``Scheduler.tokenize``). The fields and defaults are llama-server's:
``add_special`` false, ``parse_special`` true, ``with_pieces`` gives
``[{"id", "piece"}]`` (a piece that is not whole UTF-8 as its byte values), and
detokenizing writes control tokens out as their text.
"""

from __future__ import annotations

from typing import Any

import falcon

from power.errors import InvalidRequest
from power.server.body import model_field, read_json
from power.server.inference import Services, lookup
from power.server.streaming import send_json

__all__ = ["DetokenizeResource", "TokenizeResource", "MAX_TEXT_BYTES", "MAX_TOKENS"]

# An answer travels in one runner frame (power.runner.protocol.MAX_FRAME): with pieces, a byte of text can
# become a token of some 30 bytes of JSON. Both bounds are far past any model's context.
MAX_TEXT_BYTES = 4 << 20
MAX_TOKENS = 1 << 20


class _TokenResource:
    def __init__(self, services: Services) -> None:
        self.services = services

    def _model(self, req: falcon.Request, body: dict[str, Any]) -> str:
        name = model_field(body)
        req.context.model = name
        return lookup(self.services, name).name


class TokenizeResource(_TokenResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "TokenizeRequest")
        text = body.get("content", body.get("prompt"))
        name = self._model(req, body)
        if not isinstance(text, str):
            raise InvalidRequest("content is required")
        if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise InvalidRequest(f"content is too long to tokenize (at most {MAX_TEXT_BYTES >> 20} MiB)")
        tokens = self.services.scheduler.tokenize(
            name, text, add_special=bool(body.get("add_special", False)),
            parse_special=bool(body.get("parse_special", True)), pieces=bool(body.get("with_pieces", False)))
        send_json(resp, {"model": name, "tokens": tokens})


class DetokenizeResource(_TokenResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, "DetokenizeRequest")
        name = self._model(req, body)
        tokens = body.get("tokens") or []
        if len(tokens) > MAX_TOKENS:
            raise InvalidRequest(f"tokens has more than {MAX_TOKENS} ids")
        content = self.services.scheduler.detokenize(name, tokens, special=True)
        send_json(resp, {"model": name, "content": content})
