"""The vocab runner: tokenizing for models that are not loaded, from their vocabularies alone.

One long-lived process the scheduler owns (spawned like a model runner, so the
API server still never loads llama.cpp). It keeps the vocabularies of the last
few models it was asked about, loaded with ``vocab_only`` (no weights, no
context: milliseconds and a few MB), keyed by the model file, which is a blob
named by its digest and so never changes under its name. It holds no slot, no
memory budget and no place in ``/api/ps``.

Frames: ``tokenize`` and ``detokenize`` as a model runner takes them, plus the
``model`` path they are for; ``health``; ``shutdown``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections import OrderedDict
from typing import Any

from power.errors import PowerError
from power.runner.process import TOKEN_OPS, Outbox, Runner, attach, token_op

__all__ = ["VocabRunner", "main"]

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 8


class VocabRunner(Runner):
    """Answer token frames from an LRU of vocabulary-only models."""

    def __init__(self, sock: socket.socket, outbox: Outbox, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__(None, sock, outbox)
        self.capacity = max(1, capacity)
        self._vocabs: OrderedDict[str, Any] = OrderedDict()

    def answer(self, op: Any, rid: int, msg: dict[str, Any]) -> None:
        if op in TOKEN_OPS:
            self.outbox.send({"id": rid, "result": token_op(self.vocab(str(msg["model"])), msg)})
        elif op == "health":
            self.outbox.send({"id": rid, "result": {"ok": True, "pid": os.getpid(), "vocabs": len(self._vocabs)}})
        else:
            self.outbox.fail(rid, PowerError(f"unknown vocab runner op {op!r}"))

    def vocab(self, path: str) -> Any:
        """The vocabulary of the model file at ``path``, loading it (and forgetting the oldest) if needed."""
        hit = self._vocabs.get(path)
        if hit is not None:
            self._vocabs.move_to_end(path)
            return hit
        from power.engine.vocab import Vocab  # loads llama.cpp: only ever in a runner
        from power.native import load_vocab

        vocab = Vocab(load_vocab(path))
        self._vocabs[path] = vocab
        while len(self._vocabs) > self.capacity:
            _, old = self._vocabs.popitem(last=False)
            old.model.close()
        log.debug("vocabulary loaded model=%s n_vocab=%d", path, vocab.info.n_vocab)
        return vocab

    def close(self) -> None:
        for vocab in self._vocabs.values():
            vocab.model.close()
        self._vocabs.clear()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m power.runner.vocabproc",
                                 description="tokenize for a3s-power with vocabulary-only models")
    ap.add_argument("--fd", type=int, required=True, help="inherited Unix socket to serve")
    ap.add_argument("--parent", type=int, default=0, help="server pid: exit when it is gone")
    ap.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY, help="vocabularies kept loaded")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    sock, outbox = attach("vocab", args.fd, args.parent, args.log_level)
    outbox.send({"op": "ready", "info": {"pid": os.getpid()}})
    runner = VocabRunner(sock, outbox, args.capacity)
    if runner.serve() is None:  # the server is gone
        os._exit(0)
    outbox.close()
    runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
