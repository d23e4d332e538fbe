"""The inference engine: one loaded model, continuous batching, embeddings."""

from __future__ import annotations

from power.engine.options import LOAD_KEYS, LoadOptions, RequestOptions, parse_options

__all__ = ["Engine", "Request", "Chunk", "EmbedResult", "RankResult", "LoadOptions", "RequestOptions", "parse_options",
           "LOAD_KEYS"]


def __getattr__(name: str) -> object:
    # The engine core imports the native bindings; keep that lazy so the API
    # server can use the option types without loading llama.cpp.
    if name in ("Engine", "Request", "Chunk", "EmbedResult", "RankResult", "TokenLogprob"):
        from power.engine import core
        return getattr(core, name)
    raise AttributeError(name)
