"""The model store: Ollama-identical layout, blobs, manifests, GGUF, Modelfile, create.

``ModelStore`` is the entry point; the submodules are importable for their
parts (``gguf.read_gguf``, ``modelfile.parse_modelfile``, ``blobs.parse_digest``).
Nothing here imports native code: quantization loads ``power.native`` lazily.
"""

from __future__ import annotations

from power.store.blobs import BlobInfo, BlobStore, parse_digest
from power.store.gguf import GGUFFile, TensorInfo, read_gguf
from power.store.layout import Layout, StoredManifest
from power.store.library import ModelStore
from power.store.manifest import Layer, Manifest, ModelConfig
from power.store.modelfile import Command, Modelfile, parse_modelfile
from power.store.ops import ModelSummary, rfc3339
from power.store.record import ModelRecord
from power.store.request import CreateRequest

__all__ = [
    "BlobInfo", "BlobStore", "Command", "CreateRequest", "GGUFFile", "Layer", "Layout", "Manifest",
    "ModelConfig", "ModelRecord", "ModelStore", "ModelSummary", "Modelfile", "StoredManifest",
    "TensorInfo", "parse_digest", "parse_modelfile", "read_gguf", "rfc3339",
]
