"""Whether a draft model can speculate for a target: their vocabularies must match (read from GGUF metadata).

llama-server's rule (common_speculative_are_compatible): the same tokenizer type, the same BOS (EOS) when
either adds one, token counts within 128 of each other, and the same token from id 5 on wherever both
have one. Types are compared too: a token that is control in one and text in the other tokenizes apart.
Only the metadata is read (the API server never loads libllama).
"""

from __future__ import annotations

from typing import Any

from power.store.gguf import GGUFFile

__all__ = ["vocab_mismatch", "MAX_SIZE_DIFFERENCE"]

MAX_SIZE_DIFFERENCE = 128  # SPEC_VOCAB_MAX_SIZE_DIFFERENCE
_CHECK_FROM = 5  # SPEC_VOCAB_CHECK_START_TOKEN_ID


def _flag(g: GGUFFile, key: str, default: bool) -> bool:
    value = g.get(f"tokenizer.ggml.{key}")
    return value if isinstance(value, bool) else default


def _list(g: GGUFFile, key: str) -> list[Any]:
    value = g.get(f"tokenizer.ggml.{key}")
    return value if isinstance(value, list) else []


def vocab_mismatch(target: GGUFFile, draft: GGUFFile) -> str | None:
    """Why ``draft`` cannot draft for ``target`` (both read with every array kept), or None if it can."""
    kind, draft_kind = target.get("tokenizer.ggml.model"), draft.get("tokenizer.ggml.model")
    if kind != draft_kind:
        return f"the draft's tokenizer is {draft_kind!r} and the model's is {kind!r}"
    for key, special, default in (("add_bos_token", "bos_token_id", kind == "llama"),
                                  ("add_eos_token", "eos_token_id", False)):
        adds, draft_adds = _flag(target, key, default), _flag(draft, key, default)
        ids = target.get(f"tokenizer.ggml.{special}"), draft.get(f"tokenizer.ggml.{special}")
        if adds != draft_adds or (adds and ids[0] != ids[1]):
            what = special.split("_")[0].upper()
            return (f"{what} differs: the draft {'adds' if draft_adds else 'does not add'} token {ids[1]}, "
                    f"the model {'adds' if adds else 'does not add'} token {ids[0]}")
    tokens, draft_tokens = _list(target, "tokens"), _list(draft, "tokens")
    if not tokens or not draft_tokens:
        return "the draft or the model has no token list in its GGUF metadata"
    if abs(len(tokens) - len(draft_tokens)) > MAX_SIZE_DIFFERENCE:
        return (f"the draft has {len(draft_tokens)} tokens and the model {len(tokens)}; they may differ by at most "
                f"{MAX_SIZE_DIFFERENCE}")
    types, draft_types = _list(target, "token_type"), _list(draft, "token_type")
    n = min(len(tokens), len(draft_tokens))
    if tokens[_CHECK_FROM:n] != draft_tokens[_CHECK_FROM:n]:
        i = next(i for i in range(_CHECK_FROM, n) if tokens[i] != draft_tokens[i])
        return f"token {i} is {draft_tokens[i]!r} in the draft and {tokens[i]!r} in the model"
    m = min(n, len(types), len(draft_types))
    if types[_CHECK_FROM:m] != draft_types[_CHECK_FROM:m]:
        i = next(i for i in range(_CHECK_FROM, m) if types[i] != draft_types[i])
        return f"token {i} ({tokens[i]!r}) has type {draft_types[i]} in the draft and {types[i]} in the model"
    return None
