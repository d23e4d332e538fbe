"""Where the prompt cache's disk tier keeps an engine's prompt states, and what they are valid for.

A state is KV cells: it is valid only for the same weights, adapters and projector, the same llama.cpp
(commit and shim ABI) and the same KV layout (context per sequence, cache type, flash attention). The key
names all of these; it picks the folder, and the shim also writes it into every file and checks it on
reading, so a state of another model or build is removed, never loaded. A state of an engine that drafts
with a model carries the draft context's cells too: the draft model is in the key then.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from power import native
from power.engine.options import LoadOptions

__all__ = ["state_key", "state_folder"]


def _ident(path: str) -> str:
    # The store names blobs by their digest; name and size also tell apart plain files.
    return f"{os.path.basename(path)}:{os.path.getsize(path)}"


def state_key(model: str, adapters: Sequence[tuple[str, float]], projector: str | None, n_ctx_seq: int,
              load: LoadOptions, draft: str | None = None) -> str:
    parts = [_ident(model), *(f"{_ident(p)}@{s}" for p, s in adapters), _ident(projector) if projector else "",
             native.llama_commit(), f"abi{native.ABI_VERSION}", f"ctx{n_ctx_seq}", f"kv{load.kv_cache_type}",
             f"fa{load.flash_attn_mode}"]
    if draft:
        parts.append(f"draft:{_ident(draft)}")
    return "|".join(parts)


def state_folder(root: str, key: str) -> str:
    return os.path.join(root, hashlib.sha256(key.encode()).hexdigest()[:24])
