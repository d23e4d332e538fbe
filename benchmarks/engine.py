"""Engine benchmark (issue 2): a3s-power's engine against llama-bench and llama-batched-bench.

Both sides use the same model file, thread count and batch sizes, in one run, with llama.cpp's tools
built from the same vendor/ tree (benchmarks/peer.py):

* single stream: prompt tokens/s on a 512-token prompt (llama-bench pp512) and generation tokens/s
  over 128 tokens (tg128);
* aggregate generation tokens/s with 1, 4, 8 and 16 parallel sequences, each with a 128-token prompt
  and 64 new tokens (llama-batched-bench -npp 128 -ntg 64).

Our side samples greedily in C (llama.cpp's tools do not sample at all), so the comparison charges us
for sampling and for the whole Python engine loop; that cost is also reported on its own, as the share of
our wall time spent outside llama_decode, which machine noise cannot hide.

Each measure is taken as interleaved pairs (the two sides back to back, in alternating order) and
judged by the median of the pairs' ratios with a bootstrap 95% interval: on a shared VM throughput
moves by 10-20% within seconds, so only close pairs compare like with like. Writes
benchmarks/results/engine.json and engine.png.

    python benchmarks/engine.py [--model PATH] [--threads N] [--reps 3] [--rounds 10] [--only gen 16]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from peer import build_tools  # noqa: E402
from plots import pyplot  # noqa: E402

from power.engine import Engine, LoadOptions  # noqa: E402

WIDTHS = (1, 4, 8, 16)
PP, TG = 512, 128
NPP, NTG = 128, 64


MEASURES: tuple[str | int, ...] = ("prompt", "gen", *WIDTHS)
LABELS = {"prompt": f"prompt pp{PP}", "gen": f"generation tg{TG}", **{w: f"aggregate x{w}" for w in WIDTHS}}
TARGETS = {"prompt": 0.95, "gen": 0.97, **{w: 0.95 for w in WIDTHS}}


def peer_single(exe: Path, model: Path, threads: int, reps: int, measure: str) -> float:
    p, n = (PP, 0) if measure == "prompt" else (0, TG)
    out = subprocess.run([str(exe), "-m", str(model), "-t", str(threads), "-p", str(p), "-n", str(n),
                          "-r", str(reps), "-o", "json"], check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def peer_batched(exe: Path, model: Path, threads: int, width: int) -> float:
    ctx = width * (NPP + NTG) + 256
    out = subprocess.run([str(exe), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-c", str(ctx),
                          "-b", "2048", "-ub", "512", "-npp", str(NPP), "-ntg", str(NTG), "-npl", str(width),
                          "--output-format", "jsonl"], check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    return float(rows[0]["speed_tg"])


def random_tokens(eng: Engine, n: int, rng: random.Random) -> list[int]:
    # Distinct prompts every time, so no prefix is ever reused from the KV cache.
    vocab = eng.info.n_vocab
    low, high = (1000, min(vocab, 30000)) if vocab > 2000 else (0, vocab - 8)
    return [eng.info.token_bos] + [rng.randrange(low, high) for _ in range(n - 1)]


def _decode_us(eng: Engine) -> int:
    return eng.stats()["t_decode_us"]


def ours_single(model: Path, threads: int, reps: int, measure: str, rng: random.Random,
                rpc_servers: tuple[str, ...] = ()) -> tuple[float, float]:
    """Tokens/s, and the engine's own cost: the share of the requests' wall time spent outside llama_decode.

    With ``rpc_servers``, every layer goes to them (benchmarks/rpc.py)."""
    load = LoadOptions(num_ctx=PP + TG + 64, num_batch=PP, num_thread=threads)
    with Engine(str(model), load, rpc_servers=rpc_servers) as eng:
        # Warm up as llama-bench does: a whole prompt before prompt runs, a short generation before generation runs
        warm = PP if measure == "prompt" else 32
        eng.submit(random_tokens(eng, warm, rng), {"temperature": 0, "num_predict": 2}).result()
        eng.clear_cache()
        tps, over = [], []
        for _ in range(reps):
            t0 = _decode_us(eng)
            if measure == "prompt":
                c = eng.submit(random_tokens(eng, PP, rng), {"temperature": 0, "num_predict": 1}).result()
                tps.append(c.prompt_eval_count / (c.prompt_eval_duration / 1e9))
                over.append(1 - (_decode_us(eng) - t0) * 1000 / c.prompt_eval_duration)
            else:
                c = eng.submit([eng.info.token_bos], {"temperature": 0, "num_predict": TG}, ignore_eos=True).result()
                tps.append((c.eval_count - 1) / (c.eval_duration / 1e9))  # decodes between first and last token
                over.append(1 - (_decode_us(eng) - t0) * 1000 / (c.prompt_eval_duration + c.eval_duration))
    return statistics.mean(tps), statistics.mean(over)


def ours_batched(model: Path, threads: int, width: int, rng: random.Random) -> tuple[float, float]:
    load = LoadOptions(num_ctx=NPP + NTG + 32, num_parallel=width, num_batch=max(512, width * NPP),
                       num_thread=threads)
    with Engine(str(model), load) as eng:
        eng.submit(random_tokens(eng, 16, rng), {"temperature": 0, "num_predict": 4}).result()  # warm up
        t0, start = _decode_us(eng), time.monotonic_ns()
        # All at once, so they share one prompt step as in llama-batched-bench (submitted one by one,
        # a late request's prompt would land inside an earlier one's generation time).
        reqs = eng.submit_many([random_tokens(eng, NPP, rng) for _ in range(width)],
                               {"temperature": 0, "num_predict": NTG}, ignore_eos=True)
        chunks = [r.result() for r in reqs]
        tps = sum(c.eval_count - 1 for c in chunks) / (max(c.eval_duration for c in chunks) / 1e9)
        return tps, 1 - (_decode_us(eng) - t0) * 1000 / (time.monotonic_ns() - start)


def median_ci(values: list[float], level: float = 0.95, resamples: int = 4000) -> tuple[float, float]:
    """A bootstrap confidence interval of the median (fixed seed, so a rerun on the same data agrees)."""
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    cut = int((1 - level) / 2 * resamples)
    return meds[cut], meds[resamples - 1 - cut]


def summarize(pairs: dict[str | int, list[dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m, rows in pairs.items():
        ratios = [r["ours"] / r["peer"] for r in rows]
        lo, hi = median_ci(ratios)
        out[str(m)] = {"peer_best": max(r["peer"] for r in rows), "ours_best": max(r["ours"] for r in rows),
                       "peer_median": statistics.median(r["peer"] for r in rows),
                       "ours_median": statistics.median(r["ours"] for r in rows),
                       "paired_median": statistics.median(ratios), "ci95": [lo, hi], "target": TARGETS[m],
                       "overhead": statistics.median(r["overhead"] for r in rows)}
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    summ = result["summary"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    widths = [w for w in WIDTHS if str(w) in summ]
    b.plot(widths, [summ[str(w)]["peer_median"] for w in widths], "o-", label="llama-batched-bench")
    b.plot(widths, [summ[str(w)]["ours_median"] for w in widths], "s-", label="a3s-power")
    b.set_xlabel("parallel sequences")
    b.set_ylabel("aggregate generation tokens/s (median)")
    b.set_xticks(widths)
    b.legend()
    b.set_title(f"{NPP}-token prompts, {NTG} new tokens each")
    names = [m for m in summ]
    x = list(range(len(names)))
    med = [summ[m]["paired_median"] for m in names]
    err = [[med[i] - summ[m]["ci95"][0] for i, m in enumerate(names)],
           [summ[m]["ci95"][1] - med[i] for i, m in enumerate(names)]]
    a.errorbar(x, med, yerr=err, fmt="o", capsize=4, label="a3s-power / llama.cpp (paired median, 95% CI)")
    a.scatter(x, [summ[m]["target"] for m in names], marker="_", s=400, color="red", label="target")
    a.axhline(1.0, color="grey", lw=0.8)
    a.set_xticks(x, [LABELS[m if not m.isdigit() else int(m)] for m in names], rotation=20)
    a.set_ylabel("speed ratio")
    a.legend(fontsize=8)
    a.set_title("ratios over interleaved pairs")
    fig.suptitle(f"{result['model']} — {result['threads']} threads, {result['rounds']} rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved pairs per measure")
    ap.add_argument("--only", nargs="*", help="measures to run: prompt gen 1 4 8 16 (default all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if args.model is None:
        from tests.realmodels import gemma3_270m

        args.model = gemma3_270m()
    measures = [m for m in MEASURES if not args.only or str(m) in args.only]
    tools = build_tools("llama-bench", "llama-batched-bench")
    rng = random.Random(0)

    def peer(m: str | int) -> float:
        if isinstance(m, str):
            return peer_single(tools["llama-bench"], args.model, args.threads, args.reps, m)
        return peer_batched(tools["llama-batched-bench"], args.model, args.threads, m)

    def ours(m: str | int) -> tuple[float, float]:
        if isinstance(m, str):
            return ours_single(args.model, args.threads, args.reps, m, rng)
        return ours_batched(args.model, args.threads, m, rng)

    # Machine noise on a shared VM moves throughput by 10-20% within seconds, so each measure is taken
    # as pairs, the two sides back to back, in alternating order (ABBA), and judged by the median of the
    # pairs' own ratios, with a bootstrap 95% interval.
    t0 = time.time()
    pairs: dict[str | int, list[dict[str, float]]] = {m: [] for m in measures}
    for r in range(args.rounds):
        for i, m in enumerate(measures):
            if (r + i) % 2 == 0:
                p = peer(m)
                o, over = ours(m)
            else:
                o, over = ours(m)
                p = peer(m)
            pairs[m].append({"peer": p, "ours": o, "overhead": over})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{LABELS[m]} {pairs[m][-1]['ours'] / pairs[m][-1]['peer']:.3f}" for m in measures), flush=True)
    summ = summarize(pairs)
    result = {"model": args.model.name, "threads": args.threads, "rounds": args.rounds, "reps": args.reps,
              "summary": summ, "pairs": {str(m): v for m, v in pairs.items()},
              "seconds": round(time.time() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "engine.png")
    print(f"{'measure (tokens/s)':<26}{'llama.cpp':>11}{'a3s-power':>11}{'paired':>9}{'95% CI':>16}{'target':>8}"
          f"{'outside decode':>16}")
    for m in measures:
        x = summ[str(m)]
        ci = f"{x['ci95'][0]:.3f}-{x['ci95'][1]:.3f}"
        print(f"{LABELS[m]:<26}{x['peer_median']:>11.1f}{x['ours_median']:>11.1f}{x['paired_median']:>9.3f}"
              f"{ci:>16}{x['target']:>8.2f}{x['overhead'] * 100:>15.2f}%")
    print("tokens/s columns are medians over rounds; paired = median of each pair's ratio a3s-power/llama.cpp")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
