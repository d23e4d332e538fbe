"""Pulls that are not a registry: Hugging Face GGUF repositories and direct ``.gguf`` URLs.

``hf.co/<user>/<repo>[:<quant>]`` (or ``huggingface.co/...``) lists the repository
through the Hugging Face API (``<endpoint>/api/models/<user>/<repo>?blobs=true``),
picks the GGUF whose file name carries the quantization (default Q4_K_M), and
downloads ``<endpoint>/<user>/<repo>/resolve/main/<file>`` against the sha256
the listing gives. A repository that also holds a vision projector (a GGUF
with ``mmproj`` in its name) gives that file too, F16 preferred, so the model
arrives with its projector as Ollama's pull of such a repository does. ``https://.../name.gguf`` downloads the file (resumable,
keyed by its URL, restarted when its ETag changes) and names the model after
it. Either way the GGUF becomes a model through the store's own create.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from power.errors import InvalidName, RegistryError, RemoteNotFound
from power.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName
from power.registry.client import check
from power.registry.transport import Response, Transport

__all__ = ["HF_HOSTS", "HfFile", "HfModel", "UrlSource", "find_hf_model", "is_url", "name_for_url", "probe_url"]

log = logging.getLogger(__name__)

HF_HOSTS = frozenset({"hf.co", "huggingface.co"})
DEFAULT_QUANT = "Q4_K_M"
# Chosen in this order when the tag does not name a quantization that exists.
_FALLBACK = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16")
# The projector's precision matters more than its size (it is small next to the model).
_PROJECTOR_PREFERENCE = ("F16", "BF16", "F32", "Q8_0")
_MAX_LISTING = 8 << 20
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def name_for_url(url: str) -> ModelName:
    """Name a model after the file a URL points to (``.../Foo-Q4.gguf`` → ``foo-q4:latest``)."""
    path = unquote(urlsplit(url).path)
    stem = PurePosixPath(path).name
    if not stem.lower().endswith(".gguf") or len(stem) <= 5:
        raise InvalidName("invalid model name: a URL pull needs a .gguf file")
    model = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem[:-5]).strip("-.")[:80].lower()
    if not model or not (model[0].isalnum() or model[0] == "_"):
        raise InvalidName()
    return ModelName(DEFAULT_HOST, DEFAULT_NAMESPACE, model, "latest")


@dataclass(frozen=True)
class UrlSource:
    """A plain URL as a download source."""

    transport: Transport
    url: str

    def get(self, first: int | None, last: int | None, read_timeout: float) -> Response:
        headers = {"Range": f"bytes={first}-{last}"} if first is not None else {}
        return self.transport.request("GET", self.url, headers=headers, read_timeout=read_timeout)


def probe_url(transport: Transport, url: str) -> tuple[int, str]:
    """Return the size and validator (ETag) of a URL (HEAD)."""
    with transport.request("HEAD", url) as resp:
        if resp.status == 404:
            raise RemoteNotFound("file does not exist")
        check(resp)
        length = resp.header("Content-Length")
        if not length.isdigit():
            raise RegistryError(f"{url}: the server does not say how large the file is")
        return int(length), resp.header("ETag")


@dataclass(frozen=True)
class HfFile:
    """A GGUF chosen from a Hugging Face repository."""

    repo: str
    filename: str
    size: int
    digest: str | None
    url: str
    quant: str


@dataclass(frozen=True)
class HfModel:
    """The files a Hugging Face pull fetches: the model and, for a vision model, its projector."""

    model: HfFile
    projector: HfFile | None


def hf_repo(name: ModelName) -> tuple[str, str]:
    """Return (``user/repo``, requested quantization) of an ``hf.co`` name."""
    quant = DEFAULT_QUANT if name.tag.lower() == "latest" else name.tag
    return f"{name.namespace}/{name.model}", quant


def find_hf_model(transport: Transport, endpoint: str, name: ModelName) -> HfModel:
    """List the repository; choose the GGUF for the requested quantization and the projector if any."""
    repo, quant = hf_repo(name)
    url = f"{endpoint}/api/models/{quote(repo)}?blobs=true"
    with transport.request("GET", url, headers={"Accept": "application/json"}) as resp:
        if resp.status in (401, 404):
            raise RemoteNotFound("pull model manifest: file does not exist")
        check(resp)
        body = resp.read_capped(_MAX_LISTING, "model listing")
    try:
        listing = json.loads(body)
    except ValueError:
        raise RegistryError("the Hugging Face listing is not JSON") from None
    models, projectors = _gguf_files(listing)
    if not models:
        raise RemoteNotFound(f"pull model manifest: {repo} has no GGUF files")
    chosen = _choose(models, quant, explicit=name.tag.lower() != "latest")
    if chosen is None:
        have = ", ".join(sorted({q for f in models for q in _quants(f["rfilename"])})) or "none"
        raise RemoteNotFound(f"pull model manifest: no {quant} GGUF in {repo} (found: {have})")
    model = _hf_file(endpoint, repo, chosen, quant)
    projector = _choose_projector(projectors)
    found = HfModel(model, None if projector is None else _hf_file(endpoint, repo, projector[0], projector[1]))
    log.info("hugging face files chosen repo=%s file=%s size=%d projector=%s", repo, model.filename,
             model.size, found.projector.filename if found.projector else "-")
    return found


def _hf_file(endpoint: str, repo: str, item: dict[str, Any], quant: str) -> HfFile:
    filename = item["rfilename"]
    lfs_raw = item.get("lfs")
    lfs: dict[str, Any] = lfs_raw if isinstance(lfs_raw, dict) else {}
    sha = lfs.get("sha256") if isinstance(lfs.get("sha256"), str) else None
    size = lfs.get("size", item.get("size"))
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise RegistryError(f"the listing of {repo} has no size for {filename}")
    digest = f"sha256:{sha.lower()}" if sha and re.fullmatch(r"[0-9a-fA-F]{64}", sha) else None
    file_url = f"{endpoint}/{quote(repo)}/resolve/main/{quote(filename)}"
    return HfFile(repo, filename, size, digest, file_url, quant)


def _gguf_files(listing: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split the listing's single-file GGUFs into models and projectors (``mmproj`` in the name)."""
    siblings = listing.get("siblings") if isinstance(listing, dict) else None
    models: list[dict[str, Any]] = []
    projectors: list[dict[str, Any]] = []
    for item in siblings if isinstance(siblings, list) else []:
        fname = item.get("rfilename") if isinstance(item, dict) else None
        if not isinstance(fname, str) or not fname.lower().endswith(".gguf") or ".." in fname:
            continue
        if _SPLIT.search(fname):
            continue
        (projectors if "mmproj" in fname.lower() else models).append(item)
    return models, projectors


def _quants(filename: str) -> list[str]:
    stem = PurePosixPath(filename).name[:-5]
    return [q for q in re.split(r"[-.]", stem) if re.fullmatch(r"(I?Q\d\w*|F16|BF16|F32)", q, re.IGNORECASE)]


def _choose(files: list[dict[str, Any]], quant: str, explicit: bool) -> dict[str, Any] | None:
    by_quant: dict[str, dict[str, Any]] = {}
    for item in files:
        for q in _quants(item["rfilename"]):
            by_quant.setdefault(q.upper(), item)
    if quant.upper() in by_quant:
        return by_quant[quant.upper()]
    if explicit:
        return None
    for q in _FALLBACK:
        if q in by_quant:
            return by_quant[q]
    return files[0]


def _choose_projector(files: list[dict[str, Any]]) -> tuple[dict[str, Any], str] | None:
    """The projector to pull, with its quantization: by ``_PROJECTOR_PREFERENCE``, else the first."""
    for want in _PROJECTOR_PREFERENCE:
        for item in files:
            if want in (q.upper() for q in _quants(item["rfilename"])):
                return item, want
    if not files:
        return None
    return files[0], next((q.upper() for q in _quants(files[0]["rfilename"])), "")
