"""Serving benchmark (issue 4): a3s-power's runners against llama.cpp's llama-server.

Same model, threads, context per sequence and parallel slots on both sides, in one run:

* aggregate generation tokens/s with 1, 4, 8 and 16 concurrent clients;
* time to first token (median) at each concurrency;
* turn-2 time to first token of a multi-turn exchange whose earlier turns hold about 1,000 tokens,
  against turn 1's (KV prefix reuse).

llama-server is built from ``vendor/llama.cpp`` into ``build/peer`` when missing. a3s-power is driven
through its scheduler (runner processes over Unix sockets); llama-server through its HTTP streaming API.
Writes ``benchmarks/results/serving.json`` and ``serving.png``. Targets on Gemma 3 270M: aggregate
>= 0.95x llama-server at each concurrency, turn-2 TTFT <= 0.2x turn 1.

With ``--cache`` (issue 15), the prompt-cache workloads instead, over HTTP streaming on both sides (llama-server
with its defaults, its host-memory prompt cache included; both servers up, taking turns within each workload
and each W3 round, so that a noisy machine's drift falls on both), writing ``serving-cache.json``:

* W1: 8 clients arriving together, each prompt one common ~1,000-token prefix plus its own short question;
* W2: the same after the prefix has been served once;
* W3: 12 conversations taking turns (one at a time) over the slots, 3 rounds, each turn adding to its own
  history; and one conversation alone, for comparison;
* W4 (a3s-power only, with the disk tier): a conversation of about 1,000 tokens, its warm turns against its
  first turn after its runner ended (keep_alive 0) and after a restart of the whole server, each turn adding
  the same text; and the same restarts without the disk tier.

Per workload: mean and max time to first token and the wall time. Targets: W1 and W2 mean TTFT <= 0.5x
llama-server's; W3's later rounds <= 1.0x llama-server's and within 1.5x of one conversation alone; W4's
turns after a restart within 1.5x of a warm turn (time to first token, the new runner's load aside).

    python benchmarks/serving.py [--model PATH] [--threads N] [--ctx 2048] [--slots 4] [--tokens 64]
                                  [--sampling greedy|default] [--cache [--only W1,W4] [--levelling ROUNDS]]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from power.config import load_settings  # noqa: E402
from power.runner import ModelSpec, Scheduler  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from peer import build_tools  # noqa: E402
from plots import pyplot  # noqa: E402

log = logging.getLogger("benchmarks.serving")

# One generation of (prompt, tokens[, info]): yields the tokens of each piece as output arrives; given an
# ``info`` dict, fills it with the server's own figures of the request (prompt evaluation, reused tokens).
Generate = Callable[..., Iterator[int]]

TURN1 = " ".join(f"Item {i}: the quick brown fox jumps over the lazy dog near river number {i}." for i in range(60))


# Sampling on both sides: greedy, or Ollama's defaults (temperature 0.8, top-k 40, top-p 0.9) spelled out
# for llama-server, whose own defaults differ (top-p 0.95, min-p 0.05).
SAMPLING = {"greedy": {"temperature": 0}, "default": {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0}}


class Peer:
    """llama-server on a free loopback port."""

    def __init__(self, exe: Path, model: Path, threads: int, ctx: int, slots: int, sampling: str,
                 extra: Sequence[str] = ()) -> None:
        """``extra``: more llama-server arguments (a draft model's, say)."""
        self.sampling = SAMPLING[sampling]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [str(exe), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-c", str(ctx * slots),
             "-np", str(slots), "-b", "512", "-ub", "512", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-webui", "-ngl", "0", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("llama-server did not become healthy")

    def generate(self, prompt: str, n: int, info: dict[str, Any] | None = None) -> Iterator[int]:
        body = json.dumps({"prompt": prompt, "n_predict": n, "stream": True, **self.sampling,
                           "ignore_eos": True, "cache_prompt": True}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/completion", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            for line in resp:
                if not line.startswith(b"data: "):
                    continue
                msg = json.loads(line[6:])
                if msg.get("stop"):
                    if info is not None:  # prompt_ms: from its slot taking the prompt to the first token
                        t = msg.get("timings") or {}
                        info.update(prompt_ms=t.get("prompt_ms"), evaluated=t.get("prompt_n"),
                                    cached=t.get("cache_n"), slot=msg.get("id_slot"))
                    return
                yield max(1, len(msg.get("tokens") or ()))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Ours:
    """a3s-power's scheduler with one runner for the model."""

    def __init__(self, model: Path, threads: int, ctx: int, slots: int, sampling: str) -> None:
        settings = load_settings({"A3S_POWER_HOME": str(ROOT / "build" / "bench-home"),
                                  "OLLAMA_NUM_PARALLEL": str(slots), "OLLAMA_CONTEXT_LENGTH": str(ctx),
                                  "OLLAMA_KEEP_ALIVE": "-1"})
        self.sched = Scheduler(settings, lambda name: ModelSpec(name, str(model)), gpus=[])
        self.options = {"num_thread": threads, "num_batch": 512, **SAMPLING[sampling]}
        self.sched.load("bench", self.options)

    def generate(self, prompt: str, n: int) -> Iterator[int]:
        # The tiny "ignore EOS" equivalent: models may stop early; tokens are counted, not assumed.
        for chunk in self.sched.generate("bench", prompt, options={**self.options, "num_predict": n}):
            if chunk["tokens"]:
                yield len(chunk["tokens"])

    def close(self) -> None:
        self.sched.close(deadline=5)


class Http:
    """The real a3s-power server (gunicorn) on a free loopback port, driven over /api/generate streaming."""

    def __init__(self, model: Path, threads: int, ctx: int, slots: int, sampling: str,
                 env: dict[str, str] | None = None) -> None:
        import tempfile

        from power.store import ModelStore

        self.home = Path(tempfile.mkdtemp(prefix="a3s-bench-"))
        store = ModelStore(self.home / "models")
        (self.home / "Modelfile").write_text(f"FROM {model}\n")
        for _ in store.create_from_modelfile("bench", (self.home / "Modelfile").read_text(), self.home):
            pass
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = dict(os.environ, A3S_POWER_HOME=str(self.home), OLLAMA_MODELS=str(self.home / "models"),
                        OLLAMA_HOST=f"127.0.0.1:{self.port}", OLLAMA_NUM_PARALLEL=str(slots),
                        OLLAMA_CONTEXT_LENGTH=str(ctx), OLLAMA_KEEP_ALIVE="-1", **(env or {}))
        self.url = f"http://127.0.0.1:{self.port}"
        self.options = {"num_thread": threads, "num_batch": 512, **SAMPLING[sampling]}
        self.load_s = 0.0  # the last answer's load_duration
        self._rids = itertools.count()
        self._start()
        list(self.generate("warm up", 2))

    def _start(self) -> None:
        with open(self.home / "serve.log", "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", "power", "serve"], env=self.env, cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=logf)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/api/version", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            self.close()
            raise RuntimeError("a3s-power serve did not start")

    def generate(self, prompt: str, n: int, info: dict[str, Any] | None = None) -> Iterator[int]:
        body = json.dumps({"model": "bench", "prompt": prompt, "raw": True, "stream": True,
                           "options": {**self.options, "num_predict": n}}).encode()
        rid = f"bench-{next(self._rids)}"
        req = urllib.request.Request(self.url + "/api/generate", body,
                                     {"Content-Type": "application/json", "X-Request-ID": rid})
        with urllib.request.urlopen(req, timeout=600) as resp:
            seen = 0
            for line in resp:
                msg = json.loads(line)
                if msg.get("done"):
                    self.load_s = int(msg.get("load_duration", 0)) / 1e9
                    if info is not None:  # the reused tokens are in the server's log line (served_figures)
                        info.update(rid=rid, prompt_ms=int(msg.get("prompt_eval_duration", 0)) / 1e6,
                                    prompt_tokens=msg.get("prompt_eval_count"))
                    rest = int(msg.get("eval_count", seen)) - seen
                    if rest > 0:
                        yield rest
                    return
                if msg.get("response"):
                    seen += 1
                    yield 1

    def tags_latency(self, clients: int = 50, each: int = 20) -> dict[str, float]:
        lat: list[float] = []
        lock = threading.Lock()

        def client() -> None:
            mine = []
            for _ in range(each):
                t0 = time.perf_counter()
                with urllib.request.urlopen(self.url + "/api/tags", timeout=30) as r:
                    r.read()
                mine.append(time.perf_counter() - t0)
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lat.sort()
        return {"clients": clients, "requests": len(lat), "median_ms": statistics.median(lat) * 1000,
                "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000}

    def served_figures(self, infos: list[dict[str, Any]]) -> None:
        """Fill in each request's reused and evaluated tokens, and its server-side TTFT, from the server's
        log lines (by request id)."""
        pattern = re.compile(r"generation rid=(\S+) .*?prompt_tokens=(\d+) cached_tokens=(\d+) .*?ttft_ms=([\d.]+)")
        lines = {}
        for line in (self.home / "serve.log").read_text(errors="replace").splitlines():
            m = pattern.search(line)
            if m:
                lines[m.group(1)] = m
        for info in infos:
            m = lines.get(info.get("rid", ""))
            if m:
                info.update(cached=int(m.group(3)), evaluated=int(m.group(2)) - int(m.group(3)),
                            server_ttft_ms=float(m.group(4)))

    def unload(self) -> None:
        """End the model's runner (keep_alive 0) and wait until it is gone."""
        body = json.dumps({"model": "bench", "keep_alive": 0}).encode()
        req = urllib.request.Request(self.url + "/api/generate", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(self.url + "/api/ps", timeout=10) as r:
                if not json.loads(r.read())["models"]:
                    return
            time.sleep(0.05)
        raise RuntimeError("the runner did not end")

    def restart(self) -> None:
        """Stop the whole server (its runners end) and start it again on the same home and port (no warm-up:
        the next request loads the model)."""
        self.close()
        self._start()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def engine_single(model: Path, threads: int, ctx: int, n: int) -> float:
    """Generation tokens/s of one stream through the engine called in-process (no runner, no HTTP)."""
    from power.engine import Engine, LoadOptions

    with Engine(str(model), LoadOptions(num_ctx=ctx, num_thread=threads)) as eng:
        eng.submit("warm up", {"temperature": 0, "num_predict": 4}).result()
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            c = eng.submit(SINGLE_PROMPT, {"temperature": 0, "num_predict": n}).result()
            best = max(best, c.eval_count / (time.perf_counter() - t0))
        return best


SINGLE_PROMPT = "Client 0 writes a short story about a lighthouse keeper. Once upon a time"


def one_run(gen: Generate, prompt: str, n: int, info: dict[str, Any] | None = None) -> tuple[float, int, float]:
    """Return (time to first token, tokens, total seconds) of one generation; ``info``: see ``Generate``."""
    t0 = time.perf_counter()
    ttft, count = 0.0, 0
    for k in (gen(prompt, n) if info is None else gen(prompt, n, info)):
        if not count:
            ttft = time.perf_counter() - t0
        count += k
    return ttft, count, time.perf_counter() - t0


def concurrency(gen: Generate, clients: int, n: int) -> dict[str, float]:
    results: list[tuple[float, int, float]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        r = one_run(gen, f"Client {i} writes a short story about a lighthouse keeper. Once upon a time", n)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r[1] for r in results)
    return {"clients": clients, "tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall,
            "ttft_median_s": statistics.median(r[0] for r in results)}


def multi_turn(gen: Generate, n: int) -> dict[str, float]:
    one_run(gen, "warm up", 4)
    ttft1, _, _ = one_run(gen, TURN1, n)
    turn2 = TURN1 + " Assistant: noted. User: now list only the even items."
    ttft2, _, _ = one_run(gen, turn2, n)
    return {"turn1_ttft_s": ttft1, "turn2_ttft_s": ttft2, "ratio": ttft2 / ttft1 if ttft1 else 0.0}


# The prompt-cache workloads (--cache). Histories grow by fixed text, the same on both sides.
SHARED_PREFIX = "You are the help desk of a large library. " + " ".join(
    f"Rule {i}: books of shelf {i} go back to shelf {i} before closing, and readers may borrow {i % 5 + 1} of them."
    for i in range(40))
QUESTIONS = ("Where do atlases go?", "Can I renew online?", "Who sorts shelf 7?", "How many may I borrow?",
             "Is there a late fee?", "When do you close?", "Are maps lent?", "Where is shelf 12?")
TOPICS = ("rivers", "deserts", "volcanoes", "glaciers", "forests", "oceans", "islands", "canyons", "caves",
          "meadows", "reefs", "tundra")


def _ttfts(runs: list[tuple[float, int, float]], wall: float) -> dict[str, float]:
    ttft = [r[0] for r in runs]
    return {"requests": len(runs), "ttft_mean_s": statistics.mean(ttft), "ttft_max_s": max(ttft), "wall_s": wall}


def together(gen: Generate, prompts: list[str], n: int) -> dict[str, Any]:
    """All prompts sent at once; their TTFTs and the wall time until the last answer ends, and per client
    (in the order of their first tokens): when it was sent, its first token and its end (seconds from the
    workload's start), and the server's figures: ``prompt_ms`` from its sequence (slot) taking the prompt to
    the first token, so that ``wait_ms`` (TTFT less it) is the wait for a sequence and the way there, and
    the prompt tokens it reused (``cached``) and evaluated."""
    runs: list[tuple[float, int, float]] = []
    clients: list[dict[str, Any]] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def client(i: int, p: str) -> None:
        info: dict[str, Any] = {"client": i, "sent_s": time.perf_counter() - t0}
        r = one_run(gen, p, n, info)
        info.update(first_s=info["sent_s"] + r[0], end_s=info["sent_s"] + r[2], ttft_ms=r[0] * 1000)
        with lock:
            runs.append(r)
            clients.append(info)

    threads = [threading.Thread(target=client, args=(i, p)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out: dict[str, Any] = _ttfts(runs, time.perf_counter() - t0)
    out["clients"] = sorted(clients, key=lambda c: c["first_s"])
    return out


def conversation_rounds(gen: Generate, topics: tuple[str, ...], rounds: int, n: int) -> Iterator[dict[str, float]]:
    """Each conversation takes its turn in order, round after round; per round, its TTFTs and wall time."""
    history = {t: f"A conversation about {t}. " + " ".join(
        f"Fact {i} about {t}: {t} number {i} is remarkable in its own quiet way." for i in range(25))
        for t in topics}
    for r in range(rounds):
        runs = []
        t0 = time.perf_counter()
        for t in topics:
            history[t] += f" User: tell me more about {t}, part {r + 1}. Assistant:"
            runs.append(one_run(gen, history[t], n))
            history[t] += f" Here is part {r + 1} about {t}, told briefly."
        yield _ttfts(runs, time.perf_counter() - t0)


def by_group(clients: list[dict[str, Any]], slots: int) -> list[dict[str, Any]]:
    """Per group of ``slots`` clients in the order of their first tokens (the first ones to get a sequence,
    then those that waited for one): mean TTFT, wait for a sequence and prompt evaluation (ms), reused and
    evaluated prompt tokens."""
    out = []
    for k in range(0, len(clients), slots):
        g = clients[k:k + slots]

        def mean(key: str) -> float | None:
            xs = [c[key] for c in g if c.get(key) is not None]
            return statistics.mean(xs) if xs else None

        out.append({"clients": len(g), "ttft_ms": mean("ttft_ms"), "wait_ms": mean("wait_ms"),
                    "prompt_ms": mean("prompt_ms"), "cached": mean("cached"), "evaluated": mean("evaluated"),
                    "first_s": (min(c["first_s"] for c in g), max(c["first_s"] for c in g)),
                    "end_s": (min(c["end_s"] for c in g), max(c["end_s"] for c in g))})
    return out


def cache_workloads(gens: dict[str, Generate], n: int, only: set[str], slots: int = 4,
                    figures: dict[str, Callable[[list[dict[str, Any]]], None]] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """The workloads on every side (each its own server), one side after the other within each workload and,
    for W3, within each round: both sides' figures of a step come from the same minutes of a noisy machine.
    ``figures``: per side, what fills in a client's server-side figures after a workload (from a log)."""
    out: dict[str, dict[str, Any]] = {side: {} for side in gens}
    for gen in gens.values():
        one_run(gen, "warm up", 2)
    steps: list[tuple[str, Callable[[Generate], Any]]] = []
    if only & {"W1", "W2"}:  # W2 needs W1's prefix served
        steps.append(("W1", lambda gen: together(
            gen, [f"{SHARED_PREFIX} Question: {q} Answer:" for q in QUESTIONS], n)))
    if "W2" in only:
        steps.append(("W2", lambda gen: together(
            gen, [f"{SHARED_PREFIX} Question (again): {q} Answer:" for q in QUESTIONS], n)))
    for name, work in steps:
        for side, gen in gens.items():
            out[side][name] = work(gen)
    for side, data in out.items():
        for name, _ in steps:
            clients = data[name]["clients"]
            if figures and side in figures:
                figures[side](clients)
            for c in clients:
                c["wait_ms"] = c["ttft_ms"] - c["prompt_ms"] if c.get("prompt_ms") is not None else None
            data[name]["groups"] = by_group(clients, slots)
    if "W3" in only:
        for name, topics in (("W3", TOPICS), ("W3_alone", ("a lone conversation on comets",))):
            rounds = {side: conversation_rounds(gen, topics, 3, n) for side, gen in gens.items()}
            for side in gens:
                out[side][name] = []
            for _ in range(3):
                for side in gens:
                    out[side][name].append(next(rounds[side]))
    return out


def restarts(http: Http, n: int) -> dict[str, Any]:
    """W4: one conversation's turns, warm (its cells in its sequence) or the first after its runner ended or
    the server restarted; each turn adds the same text to its history. TTFTs, and the new runner's load."""
    history = "A conversation about lighthouses. " + " ".join(
        f"Fact {i} about lighthouses: lighthouse number {i} stands on its own rock in the cold sea." for i in range(60))
    turns: list[dict[str, Any]] = []

    def turn(kind: str) -> None:
        nonlocal history
        history += f" User: tell me more, part {len(turns) + 1}. Assistant:"
        ttft, _, _ = one_run(http.generate, history, n)
        turns.append({"kind": kind, "ttft_s": ttft, "load_s": http.load_s})
        history += f" Here is part {len(turns)}, told briefly."

    turn("first")
    for end in (http.unload, http.unload, http.restart, http.restart):  # twice each: the machine is noisy
        turn("warm")
        turn("warm")
        end()
        turn("after unload" if end == http.unload else "after restart")
    turn("warm")
    warm = statistics.median(t["ttft_s"] for t in turns if t["kind"] == "warm")
    out: dict[str, Any] = {"turns": turns, "warm_ttft_median_s": warm}
    for kind in ("after unload", "after restart"):
        ttft = statistics.median(t["ttft_s"] for t in turns if t["kind"] == kind)
        aside = statistics.median(t["ttft_s"] - t["load_s"] for t in turns if t["kind"] == kind)
        out[kind] = {"ttft_median_s": ttft, "ratio": ttft / warm, "ratio load aside": aside / warm}
    return out


def restart_workload(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """W4 with the disk tier, and without it for comparison."""
    out = {}
    for name, env in (("disk tier", {"A3S_POWER_CACHE_DISK": "1024"}), ("no disk tier", {"A3S_POWER_CACHE_DISK": "0"})):
        http = Http(args.model, args.threads, args.ctx, args.slots, args.sampling, env)
        try:
            out[name] = restarts(http, n)
            out[name]["log"] = str(http.home / "serve.log")
        finally:
            http.close()
    return out


def levelling_abba(args: argparse.Namespace, n: int, rounds: int) -> dict[str, Any]:
    """Batch levelling on and off (A3S_POWER_LEVEL_BATCH), both servers up, W1 then W2 on each in paired
    rounds, in ABBA order (on, off, off, on, ...); each round's prefix its own, so that its W1 is cold. Per
    round and side the mean TTFT and wall; per round the ratios off/on, and their medians."""
    servers = {side: Http(args.model, args.threads, args.ctx, args.slots, args.sampling,
                          {"A3S_POWER_LEVEL_BATCH": "1" if side == "on" else "0"}) for side in ("on", "off")}
    out: dict[str, Any] = {"load_before": os.getloadavg(), "rounds": []}
    try:
        for r in range(rounds):
            order = ("on", "off") if r % 4 in (0, 3) else ("off", "on")
            prefix = f"Desk {r} of the library. {SHARED_PREFIX}"
            row: dict[str, Any] = {"order": order}
            for side in order:
                gen = servers[side].generate
                w1 = together(gen, [f"{prefix} Question: {q} Answer:" for q in QUESTIONS], n)
                w2 = together(gen, [f"{prefix} Question (again): {q} Answer:" for q in QUESTIONS], n)
                row[side] = {w: {k: d[k] for k in ("ttft_mean_s", "ttft_max_s", "wall_s")}
                             for w, d in (("W1", w1), ("W2", w2))}
            row["off/on"] = {w: {k: row["off"][w][k] / row["on"][w][k] for k in ("ttft_mean_s", "wall_s")}
                             for w in ("W1", "W2")}
            out["rounds"].append(row)
            log.info("levelling round %d: %s", r + 1, json.dumps(row["off/on"]))
    finally:
        for h in servers.values():
            h.close()
    out["load_after"] = os.getloadavg()
    out["median off/on"] = {w: {k: statistics.median(x["off/on"][w][k] for x in out["rounds"])
                                for k in ("ttft_mean_s", "wall_s")} for w in ("W1", "W2")}
    out["range off/on"] = {w: {k: (min(x["off/on"][w][k] for x in out["rounds"]),
                                   max(x["off/on"][w][k] for x in out["rounds"]))
                               for k in ("ttft_mean_s", "wall_s")} for w in ("W1", "W2")}
    return out


def bench(gen: Generate, levels: list[int], n: int) -> dict[str, Any]:
    concurrency(gen, 1, 8)  # warm up
    return {"concurrency": [concurrency(gen, c, n) for c in levels], "multi_turn": multi_turn(gen, n)}


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for side, data in result["sides"].items():
        xs = [c["clients"] for c in data["concurrency"]]
        a.plot(xs, [c["tokens_per_s"] for c in data["concurrency"]], marker="o", label=side)
        b.plot(xs, [c["ttft_median_s"] * 1000 for c in data["concurrency"]], marker="o", label=side)
    a.set(xlabel="concurrent clients", ylabel="aggregate tokens/s", title="generation throughput")
    b.set(xlabel="concurrent clients", ylabel="median TTFT (ms)", title="time to first token")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_cache(result: dict[str, Any], path: Path) -> None:
    """Mean time to first token per workload step (W1, W2, W3's rounds), one bar per side, log scale."""
    plt = pyplot()
    if plt is None or not result["sides"]:
        return

    def steps(data: dict[str, Any]) -> list[tuple[str, float]]:
        out = [(w, data[w]["ttft_mean_s"]) for w in ("W1", "W2") if w in data]
        return out + [(f"W3 r{i + 1}", r["ttft_mean_s"]) for i, r in enumerate(data.get("W3", ()))]

    fig, ax = plt.subplots(figsize=(8, 4))
    sides = list(result["sides"].items())
    for k, (side, data) in enumerate(sides):
        names, values = zip(*steps(data)) if steps(data) else ((), ())
        xs = [i + k / (len(sides) + 1) for i in range(len(names))]
        ax.bar(xs, values, width=1 / (len(sides) + 1), label=side)
        ax.set_xticks([i + (len(sides) - 1) / (2 * (len(sides) + 1)) for i in range(len(names))], names)
    ax.set(ylabel="mean TTFT (s)", yscale="log", title=f"prompt cache workloads, {result['model']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def cache_main(args: argparse.Namespace) -> int:
    """W1-W3 over HTTP on both sides, W4 on ours; ``--tokens`` bounds each answer (16 is plenty for TTFT)."""
    n = min(args.tokens, 16)
    result: dict[str, Any] = {"model": args.model.name, "threads": args.threads, "ctx": args.ctx, "slots": args.slots,
                              "tokens": n, "sides": {}}
    only = set(args.only.split(",")) if args.only else {"W1", "W2", "W3", "W4"}
    out = args.out / ("serving-cache.json" if not args.only else f"serving-cache-{'-'.join(sorted(only))}.json")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.levelling:
        result["levelling"] = levelling_abba(args, n, args.levelling)
        out = args.out / "serving-cache-levelling.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        log.info("%s", json.dumps(result["levelling"]["median off/on"]))
        return 0
    if "W4" in only:
        result["W4"] = restart_workload(args, n)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if not only & {"W1", "W2", "W3"}:
        log.info("%s", json.dumps(result, indent=2))
        return 0
    http = Http(args.model, args.threads, args.ctx, args.slots, args.sampling)
    peer = None
    try:
        gens: dict[str, Generate] = {"a3s-power": http.generate}
        if not args.no_peer:
            peer = Peer(build_tools("llama-server")["llama-server"], args.model, args.threads, args.ctx, args.slots,
                        args.sampling)
            gens["llama-server"] = peer.generate
        result["load_before"] = os.getloadavg()
        result["sides"] = cache_workloads(gens, n, only, args.slots, {"a3s-power": http.served_figures})
        result["load_after"] = os.getloadavg()
    finally:
        http.close()
        if peer is not None:
            peer.close()
    if peer is not None:
        ours, theirs = result["sides"]["a3s-power"], result["sides"]["llama-server"]
        result["ratio_ttft_mean"] = {
            **{w: ours[w]["ttft_mean_s"] / theirs[w]["ttft_mean_s"] for w in ("W1", "W2") if w in ours},
            **{w: [a["ttft_mean_s"] / b["ttft_mean_s"] for a, b in zip(ours[w], theirs[w])]
               for w in ("W3", "W3_alone") if w in ours}}
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot_cache(result, out.with_suffix(".png"))
    log.info("%s", json.dumps(result, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF (default: Gemma 3 270M from tests/realmodels.py)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    ap.add_argument("--slots", type=int, default=4, help="parallel sequences (OLLAMA_NUM_PARALLEL, -np)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--sampling", choices=sorted(SAMPLING), default="greedy",
                    help="greedy, or Ollama's default top-k/top-p sampling on both sides")
    ap.add_argument("--no-peer", action="store_true", help="measure a3s-power only")
    ap.add_argument("--cache", action="store_true", help="the prompt-cache workloads W1-W4 only (issue 15)")
    ap.add_argument("--only", help="with --cache: the workloads to run, comma-separated (W4 has no peer side)")
    ap.add_argument("--levelling", type=int, default=0, metavar="ROUNDS",
                    help="with --cache: W1 and W2 with batch levelling on and off, ROUNDS paired rounds (ABBA)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.model is None:
        from tests.realmodels import gemma3_270m  # tests/ itself is not on sys.path: tests/packaging shadows a module
        args.model = gemma3_270m()
    if args.cache:
        return cache_main(args)
    levels = [int(x) for x in args.levels.split(",")]
    result: dict[str, Any] = {"model": args.model.name, "threads": args.threads, "ctx": args.ctx,
                              "slots": args.slots, "tokens": args.tokens, "sampling": args.sampling, "sides": {},
                              "note": "a3s-power: scheduler API and real HTTP server; llama-server: HTTP"}
    ours = Ours(args.model, args.threads, args.ctx, args.slots, args.sampling)
    try:
        result["sides"]["a3s-power"] = bench(ours.generate, levels, args.tokens)
    finally:
        ours.close()
    http = Http(args.model, args.threads, args.ctx, args.slots, args.sampling)
    try:
        result["sides"]["a3s-power http"] = bench(http.generate, levels, args.tokens)
        # best of three single-stream runs on each side (noise only ever slows a run down)
        single_http = max((one_run(http.generate, SINGLE_PROMPT, args.tokens * 2) for _ in range(3)),
                          key=lambda r: r[1] / r[2])
        result["tags_latency"] = http.tags_latency()
    finally:
        http.close()
    direct = engine_single(args.model, args.threads, args.ctx, args.tokens * 2)
    result["http_vs_engine"] = {"engine_tokens_per_s": direct,
                                "http_tokens_per_s": single_http[1] / single_http[2],
                                "ratio": single_http[1] / single_http[2] / direct}
    if not args.no_peer:
        peer = Peer(build_tools("llama-server")["llama-server"], args.model, args.threads, args.ctx, args.slots,
                    args.sampling)
        try:
            result["sides"]["llama-server"] = bench(peer.generate, levels, args.tokens)
        finally:
            peer.close()
        theirs = result["sides"]["llama-server"]
        for side in ("a3s-power", "a3s-power http"):
            mine = result["sides"][side]
            result[f"ratio_tokens_per_s {side}"] = [a["tokens_per_s"] / b["tokens_per_s"]
                                                   for a, b in zip(mine["concurrency"], theirs["concurrency"])]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "serving" if args.sampling == "greedy" else f"serving-{args.sampling}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / f"{name}.png")
    log.info("%s", json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
