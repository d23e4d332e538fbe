"""Instructions per token, a3s-power's engine against llama-bench, counted by valgrind (callgrind).

Wall-clock throughput on a shared machine varies by 10-20% from minute to minute; instruction counts do
not. Both sides run on one thread (so no thread waits on another) and twice, with two lengths: the
difference divided by the extra tokens is the marginal cost of one token, with loading, warm-up and
Python's start-up cancelled out. Our side is the whole engine (a request through ``Engine.submit``: the
loop thread, sampling in C, the chunk queue and its consumer); llama-bench neither samples nor hands
tokens over. Needs ``valgrind`` (apt-get install valgrind); takes about 15 minutes on Gemma 3 270M.

    python benchmarks/instructions.py [--model PATH]

Writes benchmarks/results/instructions.json and instructions.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from peer import build_tools  # noqa: E402
from plots import pyplot  # noqa: E402

GEN = (16, 48)      # generated tokens (llama-bench -n; warm-up: 1 token, as llama-bench's own)
PROMPT = (64, 192)  # prompt tokens (llama-bench -p runs its prompt twice: warm-up and the measured run)

_OURS = """
import random, sys
sys.path[:0] = [{root!r}, {bench!r}]
from power.engine import Engine, LoadOptions
from engine import random_tokens
kind, n = sys.argv[1], int(sys.argv[2])
with Engine({model!r}, LoadOptions(num_ctx=768, num_batch=512, num_thread=1)) as eng:
    rng = random.Random(0)
    if kind == "gen":
        eng.submit([eng.info.token_bos], {{"temperature": 0, "num_predict": 1}}, ignore_eos=True).result()
        out = eng.submit([eng.info.token_bos], {{"temperature": 0, "num_predict": n}}, ignore_eos=True).result()
        assert out.eval_count == n, out.eval_count
    else:
        eng.submit(random_tokens(eng, 8, rng), {{"temperature": 0, "num_predict": 1}}).result()
        out = eng.submit(random_tokens(eng, n, rng), {{"temperature": 0, "num_predict": 1}}).result()
        assert out.prompt_eval_count == n - 1, out.prompt_eval_count  # the BOS is reused from the warm-up
"""


def count(cmd: list[str], env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg", *cmd],
                             env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed under valgrind:\n{res.stderr[-2000:]}")
    m = re.search(r"Collected : (\d+)", res.stderr)
    if m is None:
        raise RuntimeError("valgrind printed no instruction count")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.model is None:
        from tests.realmodels import gemma3_270m

        args.model = gemma3_270m()
    bench = str(build_tools("llama-bench")["llama-bench"])
    env = {**os.environ, "OMP_WAIT_POLICY": "passive", "OMP_NUM_THREADS": "1"}
    model = str(args.model)
    with tempfile.TemporaryDirectory() as tmp:  # its own folder: the script's folder leads sys.path
        script = Path(tmp) / "ours.py"
        script.write_text(_OURS.format(root=str(ROOT), bench=str(ROOT / "benchmarks"), model=model))
        # Ours first: a broken setup fails in the first minutes, not after llama-bench's runs.
        jobs = {("ours", kind, n): [sys.executable, str(script), kind, str(n)]
                for kind, lengths in (("gen", GEN), ("prompt", PROMPT)) for n in lengths}
        jobs |= {("peer", "gen", n): [bench, "-m", model, "-t", "1", "-p", "0", "-n", str(n), "-r", "1", "-o", "json"]
                 for n in GEN}
        jobs |= {("peer", "prompt", n): [bench, "-m", model, "-t", "1", "-p", str(n), "-n", "0", "-r", "1",
                                         "-o", "json"] for n in PROMPT}
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            counts = dict(zip(jobs, pool.map(lambda cmd: count(cmd, env), jobs.values())))
    # llama-bench runs a prompt twice (warm-up included), ours once; each generates its tokens once.
    extra = {("peer", "gen"): GEN[1] - GEN[0], ("ours", "gen"): GEN[1] - GEN[0],
             ("peer", "prompt"): 2 * (PROMPT[1] - PROMPT[0]), ("ours", "prompt"): PROMPT[1] - PROMPT[0]}
    lengths = {"gen": GEN, "prompt": PROMPT}
    per_token = {side: {kind: (counts[(side, kind, lengths[kind][1])] - counts[(side, kind, lengths[kind][0])])
                        / extra[(side, kind)] for kind in ("gen", "prompt")} for side in ("peer", "ours")}
    # Fewer instructions per token is faster: the speed ratio is peer / ours.
    ratio = {kind: per_token["peer"][kind] / per_token["ours"][kind] for kind in ("gen", "prompt")}
    result: dict[str, Any] = {"model": args.model.name, "threads": 1, "per_token": per_token,
                              "speed_ratio": ratio, "targets": {"gen": 0.97, "prompt": 0.95},
                              "counts": {"/".join(map(str, k)): v for k, v in counts.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instructions.json").write_text(json.dumps(result, indent=2))
    _plot(result, args.out / "instructions.png")
    print(f"{'instructions per token':<26}{'llama-bench':>14}{'a3s-power':>14}{'speed ratio':>13}")
    for kind, label in (("prompt", "prompt token"), ("gen", "generated token")):
        print(f"{label:<26}{per_token['peer'][kind] / 1e6:>13.1f}M{per_token['ours'][kind] / 1e6:>13.1f}M"
              f"{ratio[kind]:>13.4f}")
    return 0


def _plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    kinds = ["prompt", "gen"]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(kinds))
    ax.bar([i - 0.2 for i in x], [result["per_token"]["peer"][k] / 1e6 for k in kinds], 0.4, label="llama-bench")
    ax.bar([i + 0.2 for i in x], [result["per_token"]["ours"][k] / 1e6 for k in kinds], 0.4, label="a3s-power")
    ax.set_xticks(list(x), ["per prompt token", "per generated token"])
    ax.set_ylabel("million instructions (callgrind, 1 thread)")
    ax.legend()
    ax.set_title(result["model"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
