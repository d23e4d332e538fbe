"""Well-known Ollama library names and a Hugging Face GGUF that stands in for each.

When the default registry has no manifest for a library name (it answers 404,
or cannot be reached), ``Registry.pull`` looks the name up here and pulls the
GGUF through the Hugging Face path instead, storing it under the name asked
for. Only plain library names (``registry.ollama.ai/library/<model>:<tag>``)
are looked up; a name with another host or namespace never falls back.

The quantization of each entry is the one Ollama's library ships by default
for that tag, where the repository has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from power.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    DEFAULT_TAG,
    ModelName,
    parse_name,
)

__all__ = ["WELL_KNOWN", "well_known_source"]

WELL_KNOWN: Mapping[str, str] = MappingProxyType({
    "gemma3:270m": "hf.co/unsloth/gemma-3-270m-it-GGUF:Q8_0",
    "gemma3:1b": "hf.co/ggml-org/gemma-3-1b-it-GGUF:Q4_K_M",
    "gemma3:4b": "hf.co/ggml-org/gemma-3-4b-it-GGUF:Q4_K_M",
    "gemma3:latest": "hf.co/ggml-org/gemma-3-4b-it-GGUF:Q4_K_M",
    "llama3.2:1b": "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
    "llama3.2:3b": "hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M",
    "llama3.2:latest": "hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M",
    "llama3.1:8b": "hf.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF:Q4_K_M",
    "qwen2.5:0.5b": "hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
    "qwen2.5:1.5b": "hf.co/Qwen/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M",
    "qwen2.5-coder:0.5b": "hf.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF:Q4_K_M",
    "qwen3:0.6b": "hf.co/unsloth/Qwen3-0.6B-GGUF:Q4_K_M",
    "phi3:mini": "hf.co/microsoft/Phi-3-mini-4k-instruct-gguf:Q4",
    "mistral:7b": "hf.co/bartowski/Mistral-7B-Instruct-v0.3-GGUF:Q4_K_M",
    "mistral:latest": "hf.co/bartowski/Mistral-7B-Instruct-v0.3-GGUF:Q4_K_M",
    "tinyllama:latest": "hf.co/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M",
    "nomic-embed-text:latest": "hf.co/nomic-ai/nomic-embed-text-v1.5-GGUF:F16",
})


def well_known_source(name: ModelName, table: Mapping[str, str] = WELL_KNOWN) -> ModelName | None:
    """Return the ``hf.co`` name standing in for a library ``name``, or None when there is none."""
    if name.host.lower() != DEFAULT_HOST or name.namespace.lower() != DEFAULT_NAMESPACE:
        return None
    entries = {_key(k): v for k, v in table.items()}
    source = entries.get(f"{name.model}:{name.tag}".lower())
    return parse_name(source) if source else None


def _key(entry: str) -> str:
    model, _, tag = entry.partition(":")
    return f"{model}:{tag or DEFAULT_TAG}".lower()
