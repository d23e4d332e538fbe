"""Portable wheel against the native build (issue 20): the cost of code that runs on any x86-64 CPU.

A wheel for PyPI is built with ``POWER_CPU=portable``: ggml compiles every x86-64 CPU variant as a
library and loads the best one this CPU supports at run time. This benchmark builds that wheel as CI
does (``scripts/wheel.sh``: sdist, then the wheel from it offline, auditwheel), installs it in a venv of
its own, and measures it against this checkout's native build (``scripts/setup.sh``) on the same model:

* prompt tokens/s on a 512-token prompt (pp512) and generation tokens/s over 128 tokens (tg128),
  single stream, as ``benchmarks/engine.py`` measures them;

each side in a fresh process started outside the checkout (so the venv's installed package is the one
that runs), the two back to back in alternating order (ABBA), judged by the median of the pairs' ratios
with a bootstrap 95% interval. Target: the portable wheel within 3% of native (ratio >= 0.97). Also
records which CPU variant the portable wheel loaded. Writes benchmarks/results/portable.json and .png.

    python benchmarks/portable.py [--model PATH] [--threads N] [--rounds 8] [--wheel WHEEL]

The first run builds the portable wheel (every CPU variant: about 27 minutes on 2 cores with an empty
ccache) into build/portable/; later runs reuse it while the sources are unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
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

from engine import PP, TG, median_ci  # noqa: E402
from plots import pyplot  # noqa: E402

BUILD = ROOT / "build" / "portable"
TARGET = 0.97
MEASURES = ("prompt", "gen")
LABELS = {"prompt": f"prompt pp{PP}", "gen": f"generation tg{TG}"}

# Run by each side's interpreter in isolated mode (-I: no checkout or working directory on sys.path).
CHILD = r"""
import json, random, statistics, sys
from power.engine import Engine, LoadOptions
model, threads, reps, pp, tg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(int(sys.argv[6]))
out = {}
with Engine(model, LoadOptions(num_ctx=pp + tg + 64, num_batch=pp, num_thread=threads)) as eng:
    vocab = eng.info.n_vocab
    def prompt(n):
        return [eng.info.token_bos] + [rng.randrange(1000, min(vocab, 30000)) for _ in range(n - 1)]
    eng.submit(prompt(pp), {"temperature": 0, "num_predict": 2}).result()
    eng.clear_cache()
    rates = []
    for _ in range(reps):
        c = eng.submit(prompt(pp), {"temperature": 0, "num_predict": 1}).result()
        rates.append(c.prompt_eval_count / (c.prompt_eval_duration / 1e9))
    out["prompt"] = statistics.mean(rates)
    rates = []
    for _ in range(reps):
        c = eng.submit([eng.info.token_bos], {"temperature": 0, "num_predict": tg}, ignore_eos=True).result()
        rates.append((c.eval_count - 1) / (c.eval_duration / 1e9))
    out["gen"] = statistics.mean(rates)
import power
out["package"] = power.__file__
out["cpu"] = sorted({line.split("/")[-1].strip() for line in open("/proc/self/maps") if "libggml-cpu" in line})
print(json.dumps(out))
"""


def portable_wheel(wheel: Path | None) -> Path:
    """The portable wheel: the one given, or build/portable's (built by scripts/wheel.sh when missing)."""
    if wheel is not None:
        return wheel
    found = sorted(BUILD.glob("a3s_power-*.whl"))
    if not found:
        print("building the portable wheel (scripts/wheel.sh, POWER_CPU=portable) ...", flush=True)
        subprocess.run(["bash", str(ROOT / "scripts" / "wheel.sh"), str(ROOT), str(BUILD)], check=True,
                       env=dict(os.environ, POWER_CPU="portable"))
        found = sorted(BUILD.glob("a3s_power-*.whl"))
    return found[-1]


def portable_python(wheel: Path) -> Path:
    """A venv of its own with the wheel installed (reinstalled when the wheel changed)."""
    venv = BUILD / "venv"
    python = venv / "bin" / "python"
    stamp = venv / "installed-wheel"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not stamp.is_file() or stamp.read_text() != f"{wheel.name} {wheel.stat().st_mtime_ns}":
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--force-reinstall", str(wheel)], check=True)
        stamp.write_text(f"{wheel.name} {wheel.stat().st_mtime_ns}")
    return python


def measure(python: Path, model: Path, threads: int, reps: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cwd:  # nowhere near the checkout's power/ folder
        out = subprocess.run([str(python), "-I", "-c", CHILD, str(model), str(threads), str(reps), str(PP), str(TG),
                              str(seed)], check=True, capture_output=True, text=True, cwd=cwd).stdout
    return json.loads(out.strip().splitlines()[-1])


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    summ = result["summary"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = list(range(len(MEASURES)))
    for off, side in ((-0.2, "native"), (0.2, "portable")):
        b.bar([i + off for i in x], [summ[m][f"{side}_median"] for m in MEASURES], width=0.4, label=side)
    b.set_xticks(x, [LABELS[m] for m in MEASURES])
    b.set_ylabel("tokens/s (median over rounds)")
    b.legend()
    med = [summ[m]["paired_median"] for m in MEASURES]
    err = [[med[i] - summ[m]["ci95"][0] for i, m in enumerate(MEASURES)],
           [summ[m]["ci95"][1] - med[i] for i, m in enumerate(MEASURES)]]
    a.errorbar(x, med, yerr=err, fmt="o", capsize=4, label="portable / native (paired median, 95% CI)")
    a.axhline(TARGET, color="red", lw=0.8, label=f"target {TARGET}")
    a.axhline(1.0, color="grey", lw=0.8)
    a.set_xticks(x, [LABELS[m] for m in MEASURES])
    a.set_ylabel("speed ratio")
    a.legend(fontsize=8)
    fig.suptitle(f"{result['model']}: portable wheel ({', '.join(result['portable_cpu'])}) vs native build, "
                 f"{result['threads']} threads, {result['rounds']} rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarize(args: argparse.Namespace, pairs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    summ: dict[str, Any] = {}
    for m in MEASURES:
        ratios = [p["portable"][m] / p["native"][m] for p in pairs]
        lo, hi = median_ci(ratios)
        summ[m] = {"native_median": statistics.median(p["native"][m] for p in pairs),
                   "portable_median": statistics.median(p["portable"][m] for p in pairs),
                   "paired_median": statistics.median(ratios), "ci95": [lo, hi], "target": TARGET}
    return {"model": args.model.name, "threads": args.threads, "rounds": len(pairs), "reps": args.reps,
            "portable_cpu": pairs[0]["portable"]["cpu"], "native_cpu": pairs[0]["native"]["cpu"],
            "packages": {side: pairs[0][side]["package"] for side in ("native", "portable")},
            "summary": summ, "pairs": pairs, "seconds": round(seconds, 1), "load_average": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8, help="interleaved pairs")
    ap.add_argument("--wheel", type=Path, help="a portable wheel to use instead of building one")
    ap.add_argument("--native-python", type=Path, default=ROOT / ".venv" / "bin" / "python",
                    help="the interpreter of the native build (scripts/setup.sh's venv)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if args.model is None:
        from tests.realmodels import gemma3_270m

        args.model = gemma3_270m()
    sides = {"native": args.native_python, "portable": portable_python(portable_wheel(args.wheel))}
    t0 = time.time()
    pairs: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for r in range(args.rounds):
        order = ("native", "portable") if r % 2 == 0 else ("portable", "native")
        got = {side: measure(sides[side], args.model, args.threads, args.reps, seed=r) for side in order}
        pairs.append(got)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{LABELS[m]} {got['portable'][m] / got['native'][m]:.3f}" for m in MEASURES), flush=True)
        result = summarize(args, pairs, time.time() - t0)  # after every round: an interrupted run keeps its pairs
        (args.out / "portable.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "portable.png")
    summ = result["summary"]
    print(f"portable wheel loads {', '.join(result['portable_cpu']) or '?'}; packages: {result['packages']}")
    print(f"{'measure (tokens/s)':<22}{'native':>10}{'portable':>10}{'paired':>9}{'95% CI':>16}{'target':>8}")
    for m in MEASURES:
        x = summ[m]
        ci = f"{x['ci95'][0]:.3f}-{x['ci95'][1]:.3f}"
        print(f"{LABELS[m]:<22}{x['native_median']:>10.1f}{x['portable_median']:>10.1f}{x['paired_median']:>9.3f}"
              f"{ci:>16}{x['target']:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
