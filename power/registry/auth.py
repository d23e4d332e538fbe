"""Bearer-token auth for registries: parse the 401 challenge, fetch a token, sign the request.

A registry that wants a token answers 401 with
``WWW-Authenticate: Bearer realm="...",service="...",scope="..."``. We ask the
realm (which must be on the registry's own host, P10) for a token, adding
Ollama's ``ts`` and ``nonce`` and, when the user has ``~/.ollama/id_ed25519``,
Ollama's signature header ``<base64 public key>:<base64 signature>`` over
``GET,<realm URL>,<base64(hex(sha256("")))>``. Signing uses the ``cryptography``
package when it is installed; without it the request goes unsigned (logged).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from power.errors import RegistryError
from power.registry.transport import Transport, split_url

__all__ = ["Challenge", "TokenSource", "parse_challenge", "sign_request"]

log = logging.getLogger(__name__)

_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_MAX_TOKEN_REPLY = 1 << 20
_EMPTY_SHA = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()


@dataclass(frozen=True)
class Challenge:
    """A Bearer challenge: where to ask for a token and for what."""

    realm: str
    service: str = ""
    scope: str = ""


def parse_challenge(header: str) -> Challenge | None:
    """Parse a ``WWW-Authenticate`` value; None unless it is a Bearer challenge with a realm."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params: dict[str, str] = {}
    for m in _PARAM.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    realm = params.get("realm", "")
    if not realm:
        return None
    return Challenge(realm, params.get("service", ""), params.get("scope", ""))


def sign_request(key_path: Path, data: bytes) -> str | None:
    """Return Ollama's ``<pubkey>:<signature>`` for ``data``, or None when no key or no signer."""
    try:
        raw = key_path.read_bytes()
    except OSError:
        return None
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        log.info("not signing the token request: the cryptography package is not installed")
        return None
    try:
        key = serialization.load_ssh_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        log.warning("not signing the token request: cannot read %s: %s", key_path, exc)
        return None
    if not isinstance(key, Ed25519PrivateKey):
        log.warning("not signing the token request: %s is not an ed25519 key", key_path)
        return None
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).split()[1].decode()
    return f"{public}:{base64.b64encode(key.sign(data)).decode()}"


class TokenSource:
    """Fetches and caches bearer tokens per (service, scope)."""

    def __init__(self, transport: Transport, key_path: Path | None = None) -> None:
        self.transport = transport
        self.key_path = key_path
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def cached(self, challenge_scope: tuple[str, str]) -> str | None:
        with self._lock:
            return self._tokens.get(challenge_scope)

    def token(self, challenge: Challenge, registry_host: str, scope: str = "") -> str:
        """Ask the realm for a token (the realm must be on ``registry_host``)."""
        realm = split_url(challenge.realm)
        if realm.host.lower() != registry_host.lower():
            raise RegistryError(f"refusing token realm {realm.host}: not the registry's host {registry_host}")
        scope = challenge.scope or scope
        query = {"service": challenge.service, "ts": str(int(time.time())),
                 "nonce": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")}
        if scope:
            query["scope"] = scope
        sep = "&" if "?" in realm.target else "?"
        url = f"{realm}{sep}{urlencode(query)}"
        headers: dict[str, str] = {}
        if self.key_path is not None:
            signature = sign_request(self.key_path, f"GET,{url},{_EMPTY_SHA}".encode())
            if signature:
                headers["Authorization"] = signature
        with self.transport.request("GET", url, headers=headers) as resp:
            if resp.status != 200:
                raise RegistryError(f"token request to {realm.netloc} failed: {resp.status}: {resp.error_text()}")
            body = resp.read_capped(_MAX_TOKEN_REPLY, "token reply")
        try:
            reply = json.loads(body)
        except ValueError:
            raise RegistryError(f"token reply from {realm.netloc} is not JSON") from None
        token = reply.get("token") or reply.get("access_token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token reply from {realm.netloc} has no token")
        with self._lock:
            self._tokens[(challenge.service, scope)] = token
        return token
