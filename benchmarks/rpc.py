"""RPC split benchmark (issue 18): one model local, and split over 1 and 2 loopback RPC servers.

Prompt tokens/s on a 512-token prompt (pp512) and generation tokens/s over 128 tokens (tg128), three ways:
every layer on the local CPU, every layer on one RPC server, and the layers split over two (by their free
memory, llama.cpp's default ``tensor_split``). Our side is a3s-power's engine (as a runner loads it, with
``rpc_servers``) against ``a3s-power rpc-server`` processes; the peer is llama.cpp's ``llama-bench --rpc``
against llama.cpp's own ``ggml-rpc-server``, built from the same vendor/ tree (benchmarks/peer.py), in the
same run on the same machine. Every server serves its CPU with the same thread count as the client.

On loopback the servers share this machine's cores, so the split measures the protocol's cost (each
step's activations and results crossing a socket per server), not more compute. Each of our measures
runs in a fresh process, as llama-bench does: RPC devices stay registered in a process once added.
Beside our tokens/s it records the share of our time outside llama_decode: over RPC the decode returns
before the servers finish (the wait moves to reading the logits), so there it is not our own cost.
Taken as interleaved pairs (the two sides back to back, alternating order) and judged by the median of
the pairs' ratios with a bootstrap 95% interval (benchmarks/engine.py explains why). Writes
benchmarks/results/rpc.json and rpc.png.

    python benchmarks/rpc.py [--model PATH] [--threads N] [--reps 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine import PP, TG, median_ci, ours_single  # noqa: E402
from peer import build_tools  # noqa: E402
from plots import pyplot  # noqa: E402

from tests.rpcservers import RpcServerProcess  # noqa: E402
from tests.server.live import free_port  # noqa: E402

SPLITS = {"local": 0, "rpc x1": 1, "rpc x2": 2}  # configuration: RPC servers used
MEASURES = {"prompt": f"prompt pp{PP}", "gen": f"generation tg{TG}"}


def peer_run(exe: Path, model: Path, threads: int, reps: int, measure: str, servers: list[str]) -> float:
    p, n = (PP, 0) if measure == "prompt" else (0, TG)
    cmd = [str(exe), "-m", str(model), "-t", str(threads), "-p", str(p), "-n", str(n), "-r", str(reps),
           "-o", "json"]
    if servers:
        cmd += ["--rpc", ",".join(servers), "-ngl", "99"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def ours_run(model: Path, threads: int, reps: int, measure: str, servers: list[str],
             seed: int) -> tuple[float, float]:
    """Our engine in a fresh process (``--child``): its tokens/s, and the share of its time outside llama_decode."""
    cmd = [sys.executable, __file__, "--child", measure, "--model", str(model), "--threads", str(threads),
           "--reps", str(reps), "--seed", str(seed), "--servers", ",".join(servers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return float(row["tps"]), float(row["overhead"])


def child(args: argparse.Namespace) -> int:
    servers = tuple(s for s in args.servers.split(",") if s)
    tps, overhead = ours_single(args.model, args.threads, args.reps, args.child, random.Random(args.seed), servers)
    print(json.dumps({"tps": tps, "overhead": overhead}))
    return 0


def summarize(pairs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cell, rows in pairs.items():
        ratios = [r["ours"] / r["peer"] for r in rows]
        lo, hi = median_ci(ratios)
        out[cell] = {"peer_median": statistics.median(r["peer"] for r in rows),
                     "ours_median": statistics.median(r["ours"] for r in rows),
                     "paired_median": statistics.median(ratios), "ci95": [lo, hi],
                     "overhead": statistics.median(r["overhead"] for r in rows)}
    return out


def cell_name(split: str, measure: str) -> str:
    return f"{measure} / {split}"


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    summ = result["summary"]
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(11, 4.2))
    x = list(range(len(SPLITS)))
    for ax, (measure, label) in zip(axes, MEASURES.items()):
        cells = [summ[cell_name(s, measure)] for s in SPLITS]
        ax.bar([i - 0.2 for i in x], [c["peer_median"] for c in cells], 0.4, label="llama.cpp (llama-bench)")
        ax.bar([i + 0.2 for i in x], [c["ours_median"] for c in cells], 0.4, label="a3s-power")
        for i, c in enumerate(cells):
            ax.annotate(f"{c['paired_median']:.2f}x", (i, max(c["peer_median"], c["ours_median"])),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, list(SPLITS))
        ax.set_ylabel("tokens/s (median)")
        ax.set_title(label)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['model']}: local vs loopback RPC servers — {result['threads']} threads, "
                 f"{result['rounds']} rounds (label: a3s-power / llama.cpp, paired median)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved pairs per measure")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--child", choices=list(MEASURES), help=argparse.SUPPRESS)
    ap.add_argument("--servers", default="", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        from tests.realmodels import gemma3_270m

        args.model = gemma3_270m()
    if args.child:
        return child(args)
    tools = build_tools("llama-bench", "ggml-rpc-server")
    logs = Path(tempfile.mkdtemp(prefix="rpc-bench-"))
    ours_servers: list[RpcServerProcess] = []
    peer_servers: list[RpcServerProcess] = []
    try:
        for i in range(max(SPLITS.values())):
            ours_servers.append(RpcServerProcess(free_port(), logs / f"ours{i}.log", threads=args.threads))
            peer_servers.append(RpcServerProcess(free_port(), logs / f"peer{i}.log", threads=args.threads,
                                                 peer=tools["ggml-rpc-server"]))
        t0 = time.time()
        cells = [(s, m) for m in MEASURES for s in SPLITS]
        pairs: dict[str, list[dict[str, float]]] = {cell_name(s, m): [] for s, m in cells}
        for r in range(args.rounds):
            for i, (split, measure) in enumerate(cells):
                n = SPLITS[split]
                ours_eps = [s.endpoint for s in ours_servers[:n]]
                peer_eps = [s.endpoint for s in peer_servers[:n]]

                def peer() -> float:
                    return peer_run(tools["llama-bench"], args.model, args.threads, args.reps, measure, peer_eps)

                def ours() -> tuple[float, float]:
                    return ours_run(args.model, args.threads, args.reps, measure, ours_eps, r * 100 + i)

                if (r + i) % 2 == 0:
                    p = peer()
                    o, over = ours()
                else:
                    o, over = ours()
                    p = peer()
                pairs[cell_name(split, measure)].append({"peer": p, "ours": o, "overhead": over})
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{c} {v[-1]['ours'] / v[-1]['peer']:.3f}" for c, v in pairs.items()), flush=True)
    finally:
        for s in ours_servers + peer_servers:
            s.stop()
    summ = summarize(pairs)
    result = {"model": args.model.name, "threads": args.threads, "rounds": args.rounds, "reps": args.reps,
              "servers": {"ours": "a3s-power rpc-server", "peer": "llama.cpp ggml-rpc-server"},
              "summary": summ, "pairs": pairs, "seconds": round(time.time() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rpc.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "rpc.png")
    print(f"{'measure / split (tokens/s)':<32}{'llama.cpp':>11}{'a3s-power':>11}{'paired':>9}{'95% CI':>16}"
          f"{'outside decode':>16}")
    for cell, x in summ.items():
        ci = f"{x['ci95'][0]:.3f}-{x['ci95'][1]:.3f}"
        print(f"{cell:<32}{x['peer_median']:>11.1f}{x['ours_median']:>11.1f}{x['paired_median']:>9.3f}{ci:>16}"
              f"{x['overhead'] * 100:>15.2f}%")
    print("tokens/s columns are medians over rounds; paired = median of each pair's ratio a3s-power/llama.cpp")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
