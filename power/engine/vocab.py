"""A model's vocabulary as the API uses it: text to tokens and back, checked ids, pieces, rerank pairs.

It works on any ``native.Model``, whole or loaded with ``vocab_only`` (the vocab
runner's), so tokenizing answers the same with or without the weights.
llama.cpp's tokenizer is thread-safe: these calls need no lock.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from power import native
from power.errors import InvalidRequest

__all__ = ["Vocab"]

_FIELD = re.compile(r"\{(query|document)\}")


def _piece(raw: bytes) -> str | list[int]:
    """A token's text, or its bytes where they are not whole UTF-8 (as llama-server's ``with_pieces``)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


class Vocab:
    """Tokenizing with a model's vocabulary; every error is the caller's, a 400."""

    def __init__(self, model: native.Model) -> None:
        self.model = model
        self.info = model.info
        self.rerank_template = model.chat_template("rerank")

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        try:
            return self.model.tokenize(text, add_special=add_special, parse_special=parse_special)
        except UnicodeEncodeError as exc:  # a lone surrogate: the server refuses them, other callers may not
            raise InvalidRequest(f"the text is not valid Unicode: {exc.reason} at position {exc.start}") from None

    def check_tokens(self, tokens: Sequence[Any]) -> list[int]:
        """Refuse ids that are not integers of this model's vocabulary (a 400, not an error from C)."""
        n_vocab = self.info.n_vocab
        for t in tokens:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_vocab:
                raise InvalidRequest(f"token {t!r} is not in the model's vocabulary (0 to {n_vocab - 1})")
        return list(tokens)

    def detokenize(self, tokens: Sequence[Any], *, special: bool = False) -> str:
        """The text of ``tokens``; with ``special``, control tokens are written out (``<|im_start|>``)."""
        return self.model.detokenize(self.check_tokens(tokens), unparse_special=special)

    def pieces(self, tokens: Sequence[int]) -> list[dict[str, Any]]:
        """``[{"id", "piece"}]`` per token: its text, or its bytes when they split a character."""
        piece = self.model.token_bytes
        return [{"id": t, "piece": _piece(piece(t))} for t in tokens]

    def rank_pair(self, query: str, document: str) -> list[int]:
        """The tokens a reranker scores for (query, document), as llama-server builds them.

        A GGUF ``tokenizer.chat_template.rerank`` (Qwen3-Reranker) has ``{query}`` and ``{document}``
        filled in and is tokenized with its special tokens; otherwise the pair is the BERT/RoBERTa layout
        ``BOS query EOS SEP document EOS``, each special token where the vocabulary asks for it.
        """
        template = self.rerank_template
        if template is not None:
            fields = {"query": query, "document": document}  # one pass: the texts are never read as fields
            text = _FIELD.sub(lambda m: fields[m.group(1)], template)
            return self.tokenize(text, add_special=False, parse_special=True)
        info = self.info
        eos = info.token_eos if info.token_eos >= 0 else info.token_sep
        out = [info.token_bos] if info.add_bos and info.token_bos >= 0 else []
        out += self.tokenize(query, add_special=False, parse_special=False)
        if info.add_eos and eos >= 0:
            out.append(eos)
        if info.add_sep and info.token_sep >= 0:
            out.append(info.token_sep)
        out += self.tokenize(document, add_special=False, parse_special=False)
        if info.add_eos and eos >= 0:
            out.append(eos)
        return out
