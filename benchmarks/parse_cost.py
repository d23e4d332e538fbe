"""Per-token cost of parsing model output for tool calls and thinking, per template family.

For each llama.cpp template with a tool-call syntax: a reply of some thinking, a
paragraph of content and the template's own rendering of a tool call, fed to the
parser that fits the template in pieces of about one token (4 characters).
Writes JSON (microseconds per piece, per family) to stdout or ``--out``.

    .venv/bin/python benchmarks/parse_cost.py --out parse_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from power.prompt import TemplateSource, output_parser, render_chat  # noqa: E402
from power.prompt.families import family_of  # noqa: E402

TEMPLATES = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp" / "models" / "templates"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
PROSE = "The weather depends on the city; let me look that up for you before answering. " * 8


def _call_text(source: TemplateSource) -> str:
    q = [{"role": "user", "content": "Weather?"}]
    call = {"role": "assistant", "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    prompt = render_chat(source, q, tools=TOOLS)
    full = render_chat(source, [*q, call, {"role": "tool", "content": "RESULT"}], tools=TOOLS)
    after = full[len(os.path.commonprefix([prompt, full])):full.rfind("RESULT")]
    return after


def measure(path: Path, piece: int = 4, rounds: int = 20) -> dict[str, float] | None:
    source = TemplateSource(jinja=path.read_text())
    try:
        output = PROSE + _call_text(source)
    except Exception:
        return None
    pieces = [output[i:i + piece] for i in range(0, len(output), piece)]
    times = []
    for _ in range(rounds):
        parser = output_parser(source, tools=TOOLS, think=True)
        start = time.perf_counter()
        for p in pieces:
            parser.feed(p)
        parser.finish()
        times.append((time.perf_counter() - start) / len(pieces))
    return {"us_per_token": statistics.median(times) * 1e6, "tokens": len(pieces)}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--out", type=Path)
    opts = args.parse_args()
    results: dict[str, dict[str, float]] = {}
    for path in sorted(TEMPLATES.glob("*.jinja")):
        fam = family_of(path.read_text())
        got = measure(path)
        if got is not None:
            results[path.stem] = {**got, "family": fam.name if fam else "json"}  # type: ignore[dict-item]
    costs = [r["us_per_token"] for r in results.values()]
    summary = {"templates": len(results), "median_us_per_token": statistics.median(costs),
               "max_us_per_token": max(costs), "results": results}
    text = json.dumps(summary, indent=2)
    if opts.out:
        opts.out.write_text(text)
    print(text if not opts.out else f"median {summary['median_us_per_token']:.1f} us/token, "
          f"max {summary['max_us_per_token']:.1f} us/token over {len(results)} templates")


if __name__ == "__main__":
    main()
