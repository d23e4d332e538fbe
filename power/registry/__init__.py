"""Registry transfers: pull and push by name (Ollama's registry protocol), Hugging Face and URL pulls.

``Registry`` is the entry point (``Registry.from_settings(settings, store)``);
``pull``/``push`` return iterators of Ollama's progress statuses. Parts:
``transport`` (HTTP, redirects, deadlines), ``auth`` (bearer tokens, signed
requests), ``client`` (one repository), ``download`` (resumable parallel
downloads), ``flight`` (one download per blob), ``pull``, ``push``, ``sources``
(Hugging Face, URLs), ``wellknown`` (library names the registry lacks, pulled
from Hugging Face), ``progress`` (status lines).
"""

from __future__ import annotations

from power.registry.auth import Challenge, TokenSource, parse_challenge
from power.registry.client import RegistryClient, base_url_for
from power.registry.download import Download, TransferOptions
from power.registry.service import Registry
from power.registry.transport import Destinations, Refused, Transport

__all__ = [
    "Challenge", "Destinations", "Download", "Refused", "Registry", "RegistryClient", "TokenSource", "TransferOptions", "Transport",
    "base_url_for", "parse_challenge",
]
