"""Turn stored models into what the scheduler loads, and tell the store which blobs runners hold."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from power.errors import ModelNotFound
from power.runner.loaded import ModelSpec, Resolver

__all__ = ["blob_digests", "store_resolver"]

_BLOB = re.compile(r"sha256-([0-9a-f]{64})")


def store_resolver(store: Any) -> Resolver:
    """A resolver over a ``power.store.ModelStore``: name -> ``ModelSpec`` (raises ModelNotFound)."""
    from power.store.record import details

    def resolve(name: str) -> ModelSpec:
        record = store.get(name)
        if record.model_path is None:
            raise ModelNotFound(name, f"model '{name}' has no model weights")
        return ModelSpec(
            name=record.name.display(),
            model_path=str(record.model_path),
            adapters=tuple((str(p), 1.0) for p in record.adapter_paths),
            projector=str(record.projector_paths[0]) if record.projector_paths else None,
            draft=str(record.draft_path) if record.draft_path else None,
            options=dict(record.parameters),
            digest=record.digest,
            details=details(record.config, record.parent_model),
            size=record.size,
        )

    return resolve


def blob_digests(paths: Iterable[str]) -> set[str]:
    """The ``sha256:<hex>`` digests of the blob files among ``paths``."""
    out = set()
    for p in paths:
        m = _BLOB.fullmatch(Path(p).name)
        if m:
            out.add(f"sha256:{m.group(1)}")
    return out
