"""The engine on real tiny models: sampling, stops, batching, reuse, cancellation, embeddings."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest

from power.engine import Engine, LoadOptions
from power.errors import InvalidRequest

GREEDY = {"temperature": 0, "num_predict": 16}


def run(engine: Engine, prompt: str, **opts: object):
    return engine.submit(prompt, opts).result()


def test_greedy_is_deterministic(engine: Engine) -> None:
    a = run(engine, "once upon a time", **GREEDY)
    b = run(engine, "once upon a time", **GREEDY)
    assert a.tokens == b.tokens and len(a.tokens) == 16
    assert a.done_reason == "length" and a.eval_count == 16


def test_seeded_sampling_is_reproducible_and_seeds_differ(engine: Engine) -> None:
    opts = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "num_predict": 24}
    a = run(engine, "hello", seed=42, **opts)
    b = run(engine, "hello", seed=42, **opts)
    c = run(engine, "hello", seed=43, **opts)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def _spread(engine: Engine, **opts: object) -> int:
    """How many distinct first tokens 12 seeds produce."""
    firsts = {run(engine, "the", seed=s, num_predict=1, **opts).tokens for s in range(12)}
    return len(firsts)


def test_temperature_zero_and_top_k_one_are_greedy(engine: Engine) -> None:
    greedy = run(engine, "the", temperature=0, num_predict=1).tokens
    for opts in ({"top_k": 1, "temperature": 1.5}, {"min_p": 1.0, "temperature": 1.5},
                 {"top_p": 0.0001, "temperature": 1.5}):
        assert _spread(engine, **opts) == 1
        assert run(engine, "the", seed=7, num_predict=1, **opts).tokens == greedy
    assert _spread(engine, temperature=2.0, top_k=0, top_p=1.0) > 3


SAMPLING_CASES = (
    {"temperature": 0.8, "top_k": 40, "top_p": 0.9}, {"temperature": 1.5, "top_k": 5, "min_p": 0.05},
    {"temperature": 1.0, "top_k": 200, "typical_p": 0.7},
    {"temperature": 1.2, "top_k": 20, "repeat_penalty": 1.5, "repeat_last_n": 6},  # a window that slides
    {"temperature": 1.0, "top_k": 3, "frequency_penalty": 0.8, "presence_penalty": 0.5, "repeat_penalty": 0.7},
    {"temperature": 0.9, "top_k": 268, "repeat_penalty": 1.3, "repeat_last_n": -1},  # the whole vocabulary
    # penalties that raise recent tokens, from below the raw top k, and act on negative logits
    {"temperature": 1.0, "top_k": 4, "presence_penalty": -4.0, "repeat_penalty": 0.5, "repeat_last_n": 16},
    {"temperature": 1.0, "top_k": 2, "frequency_penalty": -3.0, "repeat_last_n": 12},
)


@pytest.fixture(scope="module")
def reference(tiny_model: Path):
    """The same model sampling through llama.cpp's whole chain (the setting reference_sampling)."""
    with Engine(str(tiny_model), LoadOptions(num_ctx=256, num_parallel=8, num_batch=128,
                                             reference_sampling=True)) as eng:
        yield eng


@pytest.mark.parametrize("opts", SAMPLING_CASES)
def test_shortcut_sampling_matches_llama_cpp_chain(engine: Engine, reference: Engine, opts: dict) -> None:
    # The shim finds the top k (and applies penalties to them) itself; reference_sampling leaves everything
    # to llama.cpp's chain (full candidate array, penalties over it, partial sort). Same tokens.
    fast = [run(engine, "sampling check", seed=seed, num_predict=24, **opts).tokens for seed in range(4)]
    chain = [run(reference, "sampling check", seed=seed, num_predict=24, **opts).tokens for seed in range(4)]
    assert fast == chain
    if any(k.endswith("penalty") for k in opts):
        plain = {k: v for k, v in opts.items() if not k.endswith("penalty")}
        assert chain != [run(engine, "sampling check", seed=seed, num_predict=24, **plain).tokens
                         for seed in range(4)]  # the penalties did something


def test_typical_p_narrows_sampling(engine: Engine) -> None:
    wide = _spread(engine, temperature=2.0, top_k=0, top_p=1.0)
    narrow = _spread(engine, temperature=2.0, top_k=0, top_p=1.0, typical_p=0.001)
    assert narrow < wide


def test_penalties_change_greedy_output(engine: Engine) -> None:
    base = run(engine, "the the the the", temperature=0, num_predict=32)
    for opts in ({"repeat_penalty": 3.0}, {"presence_penalty": 5.0}, {"frequency_penalty": 5.0}):
        pen = run(engine, "the the the the", temperature=0, num_predict=32, **opts)
        assert pen.tokens != base.tokens, opts
        # a penalised token repeats less often
        assert max(pen.tokens.count(t) for t in set(pen.tokens)) <= max(base.tokens.count(t) for t in set(base.tokens))
    off = run(engine, "the the the the", temperature=0, num_predict=32, repeat_penalty=3.0, repeat_last_n=0)
    assert off.tokens == base.tokens


def test_num_predict_is_exact(engine: Engine) -> None:
    for n in (1, 5, 40):
        c = run(engine, "count", temperature=0, num_predict=n)
        assert len(c.tokens) == n and c.eval_count == n and c.done_reason == "length"


def test_end_of_generation_token_stops(eos_model: Path) -> None:
    with Engine(str(eos_model), LoadOptions(num_ctx=128)) as eng:
        c = eng.submit("hi", {"num_predict": 50}).result()
        assert c.done_reason == "stop"
        assert c.text == "" and c.eval_count == 0


def test_grammar_forces_output_and_utf8_is_never_split(engine: Engine) -> None:
    target = "héllo wörld € 😀 ok"
    chunks = list(engine.submit("x", {"temperature": 0, "num_predict": 64}, grammar=f'root ::= "{target}"'))
    assert "".join(c.text for c in chunks) == target
    assert all("\ufffd" not in c.text for c in chunks)
    # the byte-level vocabulary splits every non-ASCII character over several tokens
    assert sum(1 for c in chunks if c.tokens and c.text == "") >= 4
    assert chunks[-1].done_reason == "stop"


def test_stop_string_spanning_tokens(engine: Engine) -> None:
    target = "alpha beta gamma delta"
    req = engine.submit("x", {"temperature": 0, "num_predict": 64, "stop": ["a gam", "zzz"]},
                        grammar=f'root ::= "{target}"')
    chunks = list(req)
    assert "".join(c.text for c in chunks) == "alpha bet"
    assert chunks[-1].done_reason == "stop"


def test_invalid_grammar_is_a_400(engine: Engine) -> None:
    req = engine.submit("x", {"num_predict": 4}, grammar="root ::= (((")
    with pytest.raises(InvalidRequest, match="grammar"):
        req.result()
    assert run(engine, "still serving", **GREEDY).eval_count == 16


def test_eight_concurrent_requests_all_complete(engine: Engine) -> None:
    reqs = [engine.submit(f"request number {i}", {"seed": i, "num_predict": 10 + i}) for i in range(8)]
    results = [r.result() for r in reqs]
    for i, c in enumerate(results):
        assert c.eval_count == 10 + i and len(c.tokens) == 10 + i and c.done_reason == "length"


def test_batched_greedy_matches_single_stream(engine: Engine) -> None:
    alone = run(engine, "batch me", temperature=0, num_predict=12)
    others = [engine.submit(f"noise {i}", {"seed": i, "num_predict": 30}) for i in range(5)]
    together = run(engine, "batch me", temperature=0, num_predict=12)
    for r in others:
        r.result()
    assert together.tokens == alone.tokens


def test_submit_many_shares_one_prompt_step(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=128, num_parallel=4, num_batch=256)) as eng:
        prompts = [eng.tokenize(f"prompt number {i} for the batch") for i in range(4)]
        alone = [eng.submit(p, {"temperature": 0, "num_predict": 6}).result().tokens for p in prompts]
        eng.clear_cache()
        before = eng.stats()["n_decode"]
        reqs = eng.submit_many(prompts, {"temperature": 0, "num_predict": 6})
        together = [r.result() for r in reqs]
        # one decode for the four prompts, then one per generated token after the first
        assert eng.stats()["n_decode"] - before == 6
        assert [c.tokens for c in together] == alone
        assert all(c.prompt_eval_count == len(p) for c, p in zip(together, prompts))


def test_submit_many_queues_all_or_none(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=128, num_parallel=4)) as eng:
        before = eng.stats()["n_decode"]
        with pytest.raises(InvalidRequest, match="empty"):
            eng.submit_many(["fine", [], "also fine"], {"num_predict": 4})
        assert eng.submit_many([]) == []
        assert eng.stats()["n_decode"] == before and eng.stats()["n_waiting"] == 0
        assert run(eng, "still serving", num_predict=3).eval_count == 3


def test_more_requests_than_sequences_wait_their_turn(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=128, num_parallel=2)) as eng:
        reqs = [eng.submit(f"q{i}", {"num_predict": 8, "seed": i}) for i in range(6)]
        assert [r.result().eval_count for r in reqs] == [8] * 6


def test_prefix_reuse_evaluates_only_the_new_part(engine: Engine) -> None:
    turn1 = engine.tokenize("system: you are terse. user: tell me about the weather in the mountains today")
    first = engine.submit(turn1, {"temperature": 0, "num_predict": 8}).result()
    assert first.prompt_eval_count >= len(turn1) - 1
    new_part = engine.tokenize(" user: and tomorrow?", add_special=False)
    turn2 = turn1 + list(first.tokens) + new_part
    second = engine.submit(turn2, {"temperature": 0, "num_predict": 8}).result()
    # the last answer token was never decoded, so it is evaluated with the new part
    assert second.evaluated == len(new_part) + 1
    assert second.prompt_eval_count == len(turn2)  # counted whole, as Ollama counts it
    assert second.cached_tokens == len(turn2) - len(new_part) - 1
    again = engine.submit(turn2, {"temperature": 0, "num_predict": 8}).result()
    assert again.evaluated == 1 and again.prompt_eval_count == len(turn2) and again.tokens == second.tokens


def test_clear_cache_forgets_prefixes_after_running_requests_end(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=256, num_parallel=2)) as eng:
        prompt = eng.tokenize("a prompt long enough to be worth caching in the engine")
        assert eng.submit(prompt, {"num_predict": 2}).result().prompt_eval_count == len(prompt)
        assert eng.submit(prompt, {"num_predict": 2}).result().evaluated == 1
        running = eng.submit("still going", {"num_predict": 40})
        first = next(iter(running))  # generating now
        eng.clear_cache()
        assert running.finished and len(first.tokens) + len(running.result().tokens) == 40  # it ran to its end
        assert eng.submit(prompt, {"num_predict": 2}).result().evaluated == len(prompt)
    eng.clear_cache()  # closed: nothing to wait for


def test_cancel_frees_the_sequence_and_others_continue(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=2048, num_parallel=2)) as eng:
        long = eng.submit("long", {"num_predict": 100000})
        other = eng.submit("other", {"num_predict": 200})
        it = iter(long)
        next(it)
        long.cancel()
        rest = list(it)
        assert rest[-1].done and rest[-1].done_reason == "cancel"
        # the freed sequence serves a new request while `other` still runs
        third = eng.submit("third", {"num_predict": 5}).result()
        assert third.eval_count == 5
        assert other.result().eval_count == 200
        deadline = time.time() + 5
        while eng.stats()["n_active"] and time.time() < deadline:
            time.sleep(0.01)
        assert eng.stats()["n_active"] == 0


def test_cancel_from_another_thread_while_waiting(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=2048, num_parallel=1)) as eng:
        busy = eng.submit("busy", {"num_predict": 100000})
        waiting = eng.submit("waiting", {"num_predict": 5})
        threading.Timer(0.02, waiting.cancel).start()
        assert waiting.result().done_reason == "cancel"
        busy.cancel("unload")
        assert busy.result().done_reason == "unload"


def test_generation_that_fills_the_context_ends_with_length(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=64)) as eng:
        c = eng.submit("fill", {"num_predict": -1}).result()
        assert c.done_reason == "length"
        assert c.prompt_eval_count + c.eval_count <= 64


def test_long_prompt_is_truncated_keeping_num_keep(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=64)) as eng:
        prompt = "start " + " ".join(str(i) for i in range(200))
        req = eng.submit(prompt, {"num_predict": 4, "num_keep": 3})
        c = req.result()
        full = eng.tokenize(prompt)
        assert req.truncated and len(req.prompt_tokens) < 64
        assert req.prompt_tokens[:3] == full[:3] and req.prompt_tokens[-5:] == full[-5:]
        assert c.eval_count == 4
        with pytest.raises(InvalidRequest, match="exceeds the context length"):
            eng.submit(prompt, {"num_predict": 4}, truncate=False)


def test_logprobs(engine: Engine) -> None:
    c = engine.submit("log", {"temperature": 0, "num_predict": 3}, logprobs=5).result()
    assert len(c.logprobs) == 3
    for lp in c.logprobs:
        assert lp.logprob <= 0 and len(lp.top) == 5
        assert lp.top[0][1] >= lp.top[-1][1]
        assert math.isclose(lp.top[0][1], lp.logprob, abs_tol=1e-4)  # greedy picks the top token


def test_timings_are_reported_in_nanoseconds(engine: Engine) -> None:
    c = run(engine, "time me please", temperature=0, num_predict=8)
    assert c.prompt_eval_duration > 0 and c.eval_duration > 0
    assert c.eval_duration < 60 * 10**9


def test_load_duration_is_reported_once(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=64)) as eng:
        assert run(eng, "a", num_predict=1).load_duration > 0
        assert run(eng, "a", num_predict=1).load_duration == 0


def test_embeddings_shape_and_norm(embed_model: Path) -> None:
    with Engine(str(embed_model), LoadOptions(num_ctx=128)) as eng:
        assert eng.embedding_only
        res = eng.embed(["hello world", "a different text", "hello world"])
        assert len(res.embeddings) == 3 and all(len(v) == 64 for v in res.embeddings)
        for v in res.embeddings:
            assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)
        assert res.embeddings[0] == pytest.approx(res.embeddings[2])
        assert res.embeddings[0] != pytest.approx(res.embeddings[1])
        raw = eng.embed(["hello world"], normalize=False).embeddings[0]
        assert not math.isclose(math.sqrt(sum(x * x for x in raw)), 1.0, rel_tol=1e-3)
        with pytest.raises(InvalidRequest):
            eng.submit("generate?", {})


def test_embeddings_from_a_generative_model(engine: Engine) -> None:
    res = engine.embed(["mean pooled"])
    assert len(res.embeddings[0]) == 64 and res.prompt_eval_count == len(engine.tokenize("mean pooled"))


def test_close_ends_running_requests(tiny_model: Path) -> None:
    eng = Engine(str(tiny_model), LoadOptions(num_ctx=256))
    req = eng.submit("forever", {"num_predict": 100000})
    it = iter(req)
    next(it)
    eng.close()
    with pytest.raises(Exception, match="unloaded"):
        for _ in it:
            pass
