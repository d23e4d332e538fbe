"""The runner process: one loaded model behind a Unix socket.

Started by the server with ``subprocess`` (a fresh interpreter, never a fork of
the server), it owns one ``Engine`` and serves the frames of
``power.runner.protocol`` on the socket it inherited. One thread reads
requests; one thread per generation drains the engine's chunks into the
outbox; one writer thread sends whatever is ready in as few writes as
possible, merging the pending output of a request into a single chunk.

An engine whose loop dies is fatal to the runner (P12): its requests get
their error frames, then the process exits with ``EXIT_ENGINE_DIED``, so the
server fails whatever else was in flight and its next request starts a fresh
runner.

It never outlives the server: ``PR_SET_PDEATHSIG`` asks the kernel to kill it
when the thread that spawned it ends, end-of-file on the socket ends it, and a
watchdog polls the parent pid where neither applies.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from power.errors import PowerError
from power.runner.protocol import FrameDecoder, chunk_to_wire, encode_many, error_to_wire, merge_chunk

__all__ = ["LoadProgress", "Outbox", "TOKEN_OPS", "attach", "token_op", "die_with_parent", "main"]

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
EXIT_ENGINE_DIED = 70  # EX_SOFTWARE


class Outbox:
    """Frames waiting to be written; a request's pending chunks merge into one."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._cond = threading.Condition()
        self._frames: list[dict[str, Any]] = []
        self._open: dict[int, dict[str, Any]] = {}  # id -> its unsent chunk frame
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="runner-writer", daemon=True)
        self._thread.start()

    def chunk(self, rid: int, wire: dict[str, Any]) -> None:
        with self._cond:
            frame = self._open.get(rid)
            if frame is None:
                frame = {"id": rid, "chunks": [wire]}
                self._open[rid] = frame
                self._frames.append(frame)
            else:
                merge_chunk(frame["chunks"][-1], wire)
            self._cond.notify()

    def fail(self, rid: int, exc: BaseException) -> None:
        """End request ``rid`` with an error, after any chunk of it still unsent."""
        with self._cond:
            frame = self._open.get(rid)
            if frame is None:
                self._frames.append({"id": rid, "error": error_to_wire(exc)})
            else:
                frame["error"] = error_to_wire(exc)
            self._cond.notify()

    def send(self, msg: dict[str, Any]) -> None:
        """Queue ``msg``; whatever is queued after it, chunks and errors too, is written after it."""
        with self._cond:
            self._frames.append(msg)
            self._open.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._frames and not self._closed:
                    self._cond.wait()
                if not self._frames:
                    return
                frames, self._frames = self._frames, []
                self._open.clear()
            try:
                self._sock.sendall(encode_many(frames))
            except OSError:
                # The server is gone: nothing left to serve.
                os._exit(0)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is left and stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)


TOKEN_OPS = ("tokenize", "detokenize")


def token_op(vocab: Any, msg: dict[str, Any]) -> Any:
    """The answer to a ``tokenize`` or ``detokenize`` frame, from a ``power.engine.vocab.Vocab``."""
    if msg["op"] == "tokenize":
        tokens = vocab.tokenize(str(msg["text"]), add_special=bool(msg.get("add_special", True)),
                                parse_special=bool(msg.get("parse_special", True)))
        return vocab.pieces(tokens) if msg.get("pieces") else tokens
    return vocab.detokenize(list(msg["tokens"]), special=bool(msg.get("special")))


class Runner:
    """Serve one engine's requests from the server's socket."""

    def __init__(self, engine: Any, sock: socket.socket, outbox: Outbox) -> None:
        self.engine = engine
        self.sock = sock
        self.outbox = outbox
        self.active: dict[int, Any] = {}
        self.threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def serve(self) -> str | None:
        """Handle frames until end-of-file (None) or a shutdown request (its reason)."""
        decoder = FrameDecoder()
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return None
            if not data:
                return None
            for msg in decoder.feed(data):
                if msg.get("op") == "shutdown":
                    return str(msg.get("reason") or "unload")
                self.handle(msg)

    def handle(self, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), int(msg.get("id", 0))
        try:
            self.answer(op, rid, msg)
        except Exception as exc:  # one bad request must not end the runner
            log.debug("runner op failed op=%s id=%d: %s", op, rid, exc)
            self.outbox.fail(rid, exc)

    def answer(self, op: Any, rid: int, msg: dict[str, Any]) -> None:
        """Act on one frame (its errors go back to the server as the request's error)."""
        if op == "submit":
            self._submit(rid, msg)
        elif op == "cancel":
            with self._lock:
                req = self.active.get(rid)
            if req is not None:
                req.cancel(str(msg.get("reason") or "cancel"))
        elif op in ("embed", "rank"):
            self._start(rid, self._pooled, msg)
        elif op in TOKEN_OPS:  # answered here, at once: never behind the engine's generations
            self.outbox.send({"id": rid, "result": token_op(self.engine.vocab, msg)})
        elif op == "stats":
            self.outbox.send({"id": rid, "result": self.engine.stats()})
        elif op == "health":
            self.outbox.send({"id": rid, "result": {"ok": True, "pid": os.getpid()}})
        else:
            self.outbox.fail(rid, PowerError(f"unknown runner op {op!r}"))

    def _start(self, rid: int, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=(rid, *args), name=f"runner-req-{rid}", daemon=True)
        with self._lock:
            self.threads[rid] = t
        t.start()

    def _submit(self, rid: int, msg: dict[str, Any]) -> None:
        # ``ids``: the choices of one prompt (OpenAI's ``n``), each answered and cancelled under its own id.
        ids = [int(i) for i in msg.get("ids") or (rid,)]
        try:
            images = [base64.b64decode(image) for image in msg.get("images") or ()]
            reqs = self.engine.submit_choices(msg["prompt"], len(ids), msg.get("options") or {},
                                              grammar=msg.get("grammar"), logprobs=int(msg.get("logprobs", -1)),
                                              add_special=bool(msg.get("add_special", True)),
                                              truncate=bool(msg.get("truncate", True)), images=images)
        except Exception as exc:
            for other in ids[1:]:
                self.outbox.fail(other, exc)
            raise
        with self._lock:
            self.active.update(zip(ids, reqs))
        for i, req in zip(ids, reqs):
            self._start(i, self._pump, req, bool(msg.get("context")))

    def _pump(self, rid: int, req: Any, context: bool) -> None:
        try:
            for chunk in req:
                wire = chunk_to_wire(chunk)
                if chunk.done:
                    wire["truncated"] = bool(req.truncated)
                    if context:
                        wire["prompt_tokens"] = list(req.prompt_tokens)
                self.outbox.chunk(rid, wire)
        except Exception as exc:
            self.outbox.fail(rid, exc)
        finally:
            with self._lock:
                self.active.pop(rid, None)
                self.threads.pop(rid, None)

    def _pooled(self, rid: int, msg: dict[str, Any]) -> None:
        """An embed or rank request: one pooled evaluation of all its inputs."""
        truncate = bool(msg.get("truncate", True))
        try:
            if msg["op"] == "rank":
                ranked = self.engine.rank(str(msg["query"]), list(msg["documents"]), truncate=truncate)
                result = {"scores": ranked.scores, "prompt_eval_count": ranked.prompt_eval_count}
            else:
                res = self.engine.embed(list(msg["inputs"]), normalize=bool(msg.get("normalize", True)),
                                        truncate=truncate)
                result = {"embeddings": res.embeddings, "prompt_eval_count": res.prompt_eval_count}
            self.outbox.send({"id": rid, "result": result})
        except Exception as exc:
            self.outbox.fail(rid, exc)
        finally:
            with self._lock:
                self.threads.pop(rid, None)

    def drain(self, reason: str, timeout: float = 5.0) -> None:
        """End every running generation with ``reason`` and wait for their final chunks."""
        with self._lock:
            reqs = list(self.active.values())
            threads = list(self.threads.values())
        for req in reqs:
            req.cancel(reason)
        deadline = time.monotonic() + timeout
        for t in threads:
            if t.ident is not None:  # registered a moment before it starts
                t.join(max(0.0, deadline - time.monotonic()))


class LoadProgress:
    """llama.cpp's load-progress callback: tell the server each time another percent of the weights is in."""

    def __init__(self, outbox: Outbox, pause: float = 0.0) -> None:
        self.outbox = outbox
        self.pause = pause
        self.percent = -1

    def __call__(self, fraction: float) -> bool:
        percent = int(max(0.0, min(1.0, fraction)) * 100)
        if percent > self.percent:
            self.percent = percent
            self.outbox.send({"op": "progress", "progress": percent / 100})
            if self.pause > 0:
                time.sleep(self.pause)
        return True


def die_with_parent(parent: int) -> None:
    """Make sure this process ends when the server does."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed errno=%d", ctypes.get_errno())
        except (OSError, AttributeError) as exc:  # pragma: no cover - non-glibc systems
            log.warning("prctl unavailable: %s", exc)
    if parent and os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    if parent:
        threading.Thread(target=watch, name="runner-watchdog", daemon=True).start()


def attach(name: str, fd: int, parent: int, log_level: str) -> tuple[socket.socket, Outbox]:
    """Set up a runner-side process: its logging, its life tied to the server's, its socket and outbox."""
    logging.basicConfig(level=log_level.upper(), format=f"{name}[%(process)d] %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    die_with_parent(parent)
    sock = socket.socket(fileno=fd)
    return sock, Outbox(sock)


def _engine_info(engine: Any) -> dict[str, Any]:
    info = engine.info
    return {"pid": os.getpid(), "num_ctx": engine.num_ctx, "n_ctx_seq": engine.n_ctx_seq,
            "load_duration": engine.load_duration, "embedding_only": bool(engine.embedding_only),
            "n_ctx_train": info.n_ctx_train, "n_embd": info.n_embd, "n_layer": info.n_layer,
            "n_head": info.n_head, "n_head_kv": info.n_head_kv, "n_vocab": info.n_vocab,
            "size": info.size, "n_params": info.n_params}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m power.runner", description="serve one model for a3s-power")
    ap.add_argument("--fd", type=int, required=True, help="inherited Unix socket to serve")
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--load", default="{}", help="LoadOptions as JSON")
    ap.add_argument("--adapters", default="[]", help="LoRA adapters as JSON [[path, scale], ...]")
    ap.add_argument("--projector", default=None, help="multimodal projector GGUF (mmproj)")
    ap.add_argument("--draft", default=None, help="draft model GGUF (speculative decoding)")
    ap.add_argument("--parent", type=int, default=0, help="server pid: exit when it is gone")
    ap.add_argument("--log-level", default="WARNING")
    ap.add_argument("--cache-ram", type=int, default=0, help="bytes of host memory for saved prompt states")
    ap.add_argument("--cache-dir", default=None, help="folder of the prompt states kept across runners")
    ap.add_argument("--cache-disk", type=int, default=0, help="bytes of prompt states written there at the end")
    ap.add_argument("--rpc", default="", help="llama.cpp RPC servers host:port,... to put layers on")
    ap.add_argument("--load-pause", type=float, default=0.0,
                    help="seconds to sleep at each load-progress report: a slow load on purpose, for tests")
    args = ap.parse_args(argv)
    sock, outbox = attach("runner", args.fd, args.parent, args.log_level)
    runner: Runner | None = None

    def engine_died(err: BaseException) -> None:
        # Called before the engine ends its requests: tell the server first (so it sends nothing more
        # here, ahead of any request's error line), then let each pump send its error frame, and go.
        log.critical("engine loop died, the runner exits model=%s: %s", args.model, err)
        outbox.send({"op": "exiting", "error": error_to_wire(err)})

        def finish() -> None:
            try:
                if runner is not None:
                    runner.drain("error")
                outbox.close()
            finally:
                os._exit(EXIT_ENGINE_DIED)

        threading.Thread(target=finish, name="runner-exit", daemon=True).start()

    try:
        from power.engine.core import Engine, LoadOptions  # loads llama.cpp: only ever in a runner
        adapters = [(str(path), float(scale)) for path, scale in json.loads(args.adapters)]
        engine = Engine(args.model, LoadOptions(**json.loads(args.load)), adapters=adapters,
                        progress=LoadProgress(outbox, args.load_pause), projector=args.projector,
                        draft=args.draft, on_death=engine_died, cache_ram=args.cache_ram,
                        rpc_servers=[e for e in args.rpc.split(",") if e],
                        cache_disk=(args.cache_dir, args.cache_disk) if args.cache_dir and args.cache_disk else None)
    except Exception as exc:
        log.error("model failed to load model=%s: %s", args.model, exc)
        outbox.send({"op": "failed", "error": error_to_wire(exc)})
        outbox.close()
        return 1
    outbox.send({"op": "ready", "info": _engine_info(engine)})
    runner = Runner(engine, sock, outbox)
    reason = runner.serve()
    if reason is None:  # the server is gone; the kernel frees everything faster than we can
        os._exit(0)
    runner.drain(reason)
    outbox.close()
    engine.close()
    return 0
