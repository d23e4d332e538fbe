"""Prompt lookup through real gunicorn, a real runner and the ollama client: on by a model's parameter or a
request's option, the same answer as without it, its counts in the final chunk and in /metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
import pytest

from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.live import LiveServer
from tests.tinymodels import write_llama

ollama = pytest.importorskip("ollama")

PROMPT = "abcde abcde cdcd abcde"
GREEDY = {"temperature": 0, "num_predict": 60}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("spec-home")
    gguf = write_llama(home / "letters.gguf", seed=1, favour=("a", "b", "c", "d", "e"), favour_bias=30.0)
    library = ModelStore(home / "models", noprune=True)
    add_model(library, "letters", gguf)
    add_model(library, "letters-lookup", gguf, parameters={"draft_lookup": True, "draft_num_predict": 8})
    # Every draft asked for is made (no speculation gate: its decisions depend on timings), so that the
    # counts of equal requests are equal.
    live = LiveServer(home, {"OLLAMA_NUM_PARALLEL": "2", "A3S_POWER_SPEC_COSTS": "off"})
    yield live
    assert live.stop() == 0


def drafts(server: LiveServer, model: str) -> tuple[float, float]:
    status, body = server.request("GET", "/metrics")
    assert status == 200
    found = dict(re.findall(rf'^(a3s_power_draft\w*)_total\{{model="{model}:latest"\}} (\S+)$', body.decode(), re.M))
    return float(found.get("a3s_power_draft_tokens", 0)), float(found.get("a3s_power_draft_accepted_tokens", 0))


def test_lookup_by_parameter_or_option_gives_the_same_answer_and_counts_its_drafts(server: LiveServer) -> None:
    client = ollama.Client(host=server.url)
    off = client.generate(model="letters", prompt=PROMPT, raw=True, options=GREEDY)
    by_client = client.generate(model="letters-lookup", prompt=PROMPT, raw=True, options=GREEDY)
    assert by_client.response == off.response and by_client.eval_count == off.eval_count == 60
    # the counts are debug fields of ours in the final chunk (the ollama client drops what it does not know)
    status, body = server.request("POST", "/api/generate", {"model": "letters-lookup", "prompt": PROMPT,
                                                            "raw": True, "stream": False, "options": GREEDY})
    by_param = json.loads(body)
    assert status == 200 and by_param["response"] == off.response
    assert 0 < by_param["draft_accepted"] < by_param["draft_count"]
    lines = list(server.stream_lines("/api/generate", {"model": "letters", "prompt": PROMPT, "raw": True,
                                                       "options": {**GREEDY, "draft_lookup": True,
                                                                   "draft_num_predict": 8}}))
    by_option = lines[-1]
    assert "".join(line["response"] for line in lines) == off.response
    assert all("draft_count" not in line for line in lines[:-1])
    assert (by_option["draft_count"], by_option["draft_accepted"]) == (by_param["draft_count"],
                                                                       by_param["draft_accepted"])
    plain = json.loads(server.request("POST", "/api/generate", {"model": "letters", "prompt": PROMPT, "raw": True,
                                                                 "stream": False, "options": GREEDY})[1])
    assert "draft_count" not in plain  # zero counts are left out, as Ollama leaves out zero timings
    assert drafts(server, "letters-lookup") == (2 * by_param["draft_count"], 2 * by_param["draft_accepted"])
    assert drafts(server, "letters") == (by_option["draft_count"], by_option["draft_accepted"])


def test_a_bad_draft_option_is_a_400(server: LiveServer) -> None:
    client = ollama.Client(host=server.url)
    for bad in ({"draft_lookup": "yes"}, {"draft_num_predict": -1}):
        with pytest.raises(ollama.ResponseError) as err:
            client.generate(model="letters", prompt=PROMPT, options={**GREEDY, **bad})
        assert err.value.status_code == 400 and "draft_" in err.value.error


def test_the_speculation_gate_skips_drafts_that_cannot_win_and_metrics_count_them(
        tmp_path: Path) -> None:
    # Compute-bound costs (every row as dear as a step: drafts at best pay for themselves): lookup drafts
    # only in its first steps and re-probes, the answer is the same, and /metrics counts the skipped steps.
    home = tmp_path / "home"
    gguf = write_llama(tmp_path / "letters.gguf", seed=1, favour=("a", "b", "c", "d", "e"), favour_bias=30.0)
    add_model(ModelStore(home / "models", noprune=True), "letters", gguf)
    live = LiveServer(home, {"A3S_POWER_SPEC_COSTS": "0,1000,0"})
    try:
        client = ollama.Client(host=live.url)
        off = client.generate(model="letters", prompt=PROMPT, raw=True, options=GREEDY)
        status, body = live.request("POST", "/api/generate", {
            "model": "letters", "prompt": PROMPT, "raw": True, "stream": False,
            "options": {**GREEDY, "draft_lookup": True, "draft_num_predict": 8}})
        gated = json.loads(body)
        assert status == 200 and gated["response"] == off.response
        assert gated.get("draft_count", 0) <= 3 * 8
        status, metrics = live.request("GET", "/metrics")
        found = re.search(r'^a3s_power_draft_skipped_steps_total\{model="letters:latest"\} (\S+)$',
                          metrics.decode(), re.M)
        assert status == 200 and found and float(found.group(1)) >= 30
    finally:
        assert live.stop() == 0
