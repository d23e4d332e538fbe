"""One repository on an Ollama-style (Docker v2) registry: manifests, blobs, uploads.

Where a model name points: the host table in the settings first (tests map
``registry.ollama.ai`` to a loopback server), else ``https://<host>``, or
``http://<host>`` with ``insecure``. A 401 with a Bearer challenge is answered
once with a token from ``auth.TokenSource``; later requests reuse it. Registry
answers become typed errors here: 404 is ``RemoteNotFound`` ("file does not
exist"), any other status from 400 up is ``RegistryError("<code>: <body>")``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import BinaryIO
from urllib.parse import quote, urlencode, urljoin

from power.errors import RegistryError, RemoteNotFound
from power.names import ModelName
from power.registry.auth import TokenSource, parse_challenge
from power.registry.transport import Response, Transport, split_url
from power.store.blobs import parse_digest
from power.store.manifest import MANIFEST_MEDIA_TYPE

__all__ = ["RegistryClient", "base_url_for"]

log = logging.getLogger(__name__)

MAX_MANIFEST = 4 << 20
_ACCEPT = f"{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.manifest.v1+json"


def base_url_for(name: ModelName, hosts: Mapping[str, str], insecure: bool) -> str:
    """Return ``scheme://host[:port]`` serving ``name``'s registry."""
    mapped = hosts.get(name.host.lower())
    if mapped:
        return mapped.rstrip("/")
    if name.scheme == "http" and not insecure:
        raise RegistryError("insecure protocol http: pass insecure to use a plain-http registry")
    return f"{'http' if insecure else 'https'}://{name.host}"


class RegistryClient:
    """Requests against ``<base>/v2/<namespace>/<model>/...`` with token auth."""

    def __init__(self, base_url: str, repository: str, transport: Transport, tokens: TokenSource,
                 *, push: bool = False) -> None:
        self.base = split_url(base_url.rstrip("/") + "/")
        self.repository = repository
        self.transport = transport
        self.tokens = tokens
        self.scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        self._authorization: str | None = None

    def url(self, path: str) -> str:
        return f"{self.base.scheme}://{self.base.netloc}/v2/{self.repository}/{path}"

    def send(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
             body: bytes | BinaryIO | None = None, follow: bool = True,
             read_timeout: float | None = None) -> Response:
        """Send one request, answering a Bearer challenge once.

        The token goes only to the registry's own origin: an upload location
        elsewhere gets the request without it, and its challenge is not answered.
        """
        url = urljoin(str(self.base), url)
        own = split_url(url).origin == self.base.origin
        for attempt in (0, 1):
            resp = self.transport.request(method, url, headers=headers, body=body,
                                          authorization=self._authorization if own else None, follow=follow,
                                          read_timeout=read_timeout)
            if resp.status != 401 or attempt == 1 or not own:
                return resp
            challenge = parse_challenge(resp.header("WWW-Authenticate"))
            detail = resp.error_text()
            resp.close()
            if challenge is None:
                raise RegistryError(f"401: unauthorized: {detail}".rstrip(": "))
            if hasattr(body, "seek"):
                body.seek(0)  # type: ignore[union-attr]
            token = self.tokens.token(challenge, self.base.host, self.scope)
            self._authorization = f"Bearer {token}"
        raise AssertionError("unreachable")

    # -- pull -------------------------------------------------------------------
    def manifest(self, tag: str) -> bytes:
        """Fetch the raw manifest bytes of ``tag`` (verbatim, for the model ID)."""
        with self.send("GET", self.url(f"manifests/{quote(tag)}"), headers={"Accept": _ACCEPT}) as resp:
            check(resp)
            return resp.read_capped(MAX_MANIFEST, "manifest")

    def blob_url(self, digest: str) -> str:
        return self.url(f"blobs/{parse_digest(digest)}")

    # -- push -------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        with self.send("HEAD", self.blob_url(digest)) as resp:
            if resp.status == 404:
                return False
            check(resp)
            return True

    def start_upload(self, digest: str, mount_from: str = "") -> str | None:
        """Open an upload session and return its location; None when the blob was mounted."""
        query = ""
        if mount_from and mount_from != self.repository:
            query = "?" + urlencode({"mount": parse_digest(digest), "from": mount_from})
        with self.send("POST", self.url("blobs/uploads/") + query, headers={"Content-Length": "0"},
                       body=b"") as resp:
            check(resp)
            if resp.status == 201:
                return None
            return self._location(resp)

    def upload_chunk(self, location: str, data: bytes, offset: int) -> str:
        """PATCH one chunk; return the next location."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                   "Content-Range": f"{offset}-{offset + len(data) - 1}"}
        with self.send("PATCH", location, headers=headers, body=data, follow=False) as resp:
            check(resp)
            return self._location(resp)

    def finish_upload(self, location: str, digest: str, body: BinaryIO | None, size: int) -> None:
        """PUT the last (or only) piece with ``?digest=``."""
        sep = "&" if "?" in location else "?"
        url = f"{urljoin(str(self.base), location)}{sep}{urlencode({'digest': parse_digest(digest)})}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size if body else 0)}
        with self.send("PUT", url, headers=headers, body=body if body is not None else b"",
                       follow=False) as resp:
            check(resp)

    def put_manifest(self, tag: str, raw: bytes, media_type: str) -> None:
        headers = {"Content-Type": media_type, "Content-Length": str(len(raw))}
        with self.send("PUT", self.url(f"manifests/{quote(tag)}"), headers=headers, body=raw,
                       follow=False) as resp:
            check(resp)

    def _location(self, resp: Response) -> str:
        location = resp.header("Docker-Upload-Location") or resp.header("Location")
        if not location:
            raise RegistryError("registry did not say where to upload")
        return str(split_url(urljoin(str(resp.url), location)))  # its address is checked when it is used


def check(resp: Response) -> None:
    """Raise the typed error for a failed registry answer."""
    if resp.status < 400:
        return
    if resp.status == 404:
        raise RemoteNotFound("file does not exist")
    text = resp.error_text()
    raise RegistryError(f"{resp.status}: {text}" if text else f"{resp.status}: {resp.reason}")
