"""Speculative decoding with prompt lookup: drafts from a sequence's own tokens, verified in the batch.

The model favours five letters, so its output repeats n-grams of itself and of the prompt: many drafts,
some accepted and some rejected. Whatever is drafted, the output must be what decoding one token a step
gives: the same tokens, text, log-probabilities, stops and limits.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from power.engine import Engine, LoadOptions

# These tests are about verifying drafts: every draft asked for is made, no speculation gate
# (test_spec_gate.py covers the gate).
UNGATED = "off"

PROMPT = "abcde abcde cdcd abcde"
GREEDY = {"temperature": 0, "num_predict": 80}
LOOKUP = {"draft_lookup": True, "draft_num_predict": 8}


@pytest.fixture(scope="module")
def letters_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tinymodels import write_llama

    return write_llama(tmp_path_factory.mktemp("models") / "letters.gguf", seed=1,
                       favour=("a", "b", "c", "d", "e"), favour_bias=30.0)


@pytest.fixture(scope="module")
def eng(letters_model: Path):
    with Engine(str(letters_model), LoadOptions(num_ctx=512, num_parallel=4, num_batch=64, spec_costs=UNGATED)) as e:
        yield e


def plain(model: Path, prompt: object, options: dict[str, object], **kw: object):
    """The answer from a fresh engine decoding one token a step."""
    with Engine(str(model), LoadOptions(num_ctx=512, num_parallel=1)) as e:
        return e.submit(prompt, options, **kw).result()


def test_greedy_output_is_token_for_token_the_same_and_drafts_are_accepted(eng: Engine,
                                                                            letters_model: Path) -> None:
    before = eng.stats()
    on = eng.submit(PROMPT, {**GREEDY, **LOOKUP}).result()
    off = plain(letters_model, PROMPT, GREEDY)
    assert on.tokens == off.tokens and on.text == off.text and len(on.tokens) == 80
    assert off.draft_count == 0 and off.draft_accepted == 0
    assert on.draft_count > 20 and 10 < on.draft_accepted < on.draft_count  # accepted, and some rejected
    st = eng.stats()
    assert st["n_draft_tokens"] - before["n_draft_tokens"] == on.draft_count
    assert st["n_draft_accepted"] - before["n_draft_accepted"] == on.draft_accepted
    # fewer decodes than tokens: accepted drafts came several to a step
    assert st["n_decode"] - before["n_decode"] <= 80 - on.draft_accepted + 2


def test_off_by_default_and_draft_num_predict_bounds_each_draft(eng: Engine) -> None:
    assert eng.submit(PROMPT, GREEDY).result().draft_count == 0
    assert eng.submit(PROMPT, {**GREEDY, "draft_lookup": True, "draft_num_predict": 0}).result().draft_count == 0
    before = eng.stats()
    one = eng.submit(PROMPT, {**GREEDY, "draft_lookup": True, "draft_num_predict": 1}).result()
    steps = eng.stats()["n_decode"] - before["n_decode"]
    assert 0 < one.draft_count <= steps  # at most one token drafted per step


def test_sequences_with_and_without_lookup_share_the_batch(eng: Engine, letters_model: Path) -> None:
    prompts = [PROMPT, "ccddee abab", "edcba edcba", PROMPT + " ab"]
    options = [{**GREEDY, **LOOKUP}, GREEDY, {**GREEDY, **LOOKUP, "num_predict": 33}, {**GREEDY, **LOOKUP}]
    before = eng.stats()
    reqs = [eng.submit(p, o) for p, o in zip(prompts, options)]
    outs = [r.result() for r in reqs]
    assert eng.stats()["n_decode"] - before["n_decode"] < sum(len(o.tokens) for o in outs) // 2  # batched
    for p, o, out in zip(prompts, options, outs):
        assert out.tokens == plain(letters_model, p, {k: v for k, v in o.items() if k not in LOOKUP}).tokens
    assert [len(o.tokens) for o in outs] == [80, 80, 33, 80]
    assert outs[1].draft_count == 0 and all(outs[i].draft_accepted > 0 for i in (0, 2, 3))


@pytest.mark.parametrize("n", [1, 2, 5, 9, 17])
def test_num_predict_holds_whatever_is_drafted(eng: Engine, n: int) -> None:
    out = eng.submit(PROMPT, {**GREEDY, **LOOKUP, "num_predict": n}).result()
    assert len(out.tokens) == out.eval_count == n and out.done_reason == "length"


def test_sampled_output_with_a_seed_is_unchanged(eng: Engine, letters_model: Path) -> None:
    sampled = {"temperature": 0.7, "top_k": 5, "seed": 11, "num_predict": 60}
    on = eng.submit(PROMPT, {**sampled, **LOOKUP}).result()
    assert on.tokens == plain(letters_model, PROMPT, sampled).tokens and on.draft_accepted > 0
    penalised = {**sampled, "repeat_penalty": 1.3, "top_k": 0}  # penalties in the chain, every candidate
    on = eng.submit(PROMPT, {**penalised, **LOOKUP}).result()
    assert on.tokens == plain(letters_model, PROMPT, penalised).tokens and on.draft_count > 0


def test_grammar_still_applies(eng: Engine, letters_model: Path) -> None:
    grammar = 'root ::= ("ab" | "cd" | "e")+ "."'
    options = {**GREEDY, "num_predict": 40}
    on = eng.submit(PROMPT, {**options, **LOOKUP}, grammar=grammar).result()
    assert re.fullmatch(r"(ab|cd|e)+\.?", on.text), on.text
    assert on.tokens == plain(letters_model, PROMPT, options, grammar=grammar).tokens
    assert on.draft_count > 0


def test_stop_strings_end_where_they_would(eng: Engine, letters_model: Path) -> None:
    full = plain(letters_model, PROMPT, GREEDY).text
    stop = full[20:23]
    at = full.index(stop)
    on = eng.submit(PROMPT, {**GREEDY, **LOOKUP, "stop": [stop]}).result()
    assert on.done_reason == "stop" and on.text == full[:at]


def test_logprobs_are_the_models_at_each_accepted_token(eng: Engine, letters_model: Path) -> None:
    on = eng.submit(PROMPT, {**GREEDY, **LOOKUP}, logprobs=3).result()
    off = plain(letters_model, PROMPT, GREEDY, logprobs=3)
    assert on.draft_accepted > 0 and len(on.logprobs) == len(off.logprobs) == 80
    for a, b in zip(on.logprobs, off.logprobs):  # batched rows sum their floats in another order
        assert a.token == b.token and math.isclose(a.logprob, b.logprob, abs_tol=2e-3)
        assert [t for t, _, _ in a.top] == [t for t, _, _ in b.top]


def test_rejected_cells_are_gone_when_the_conversation_goes_on(eng: Engine, letters_model: Path) -> None:
    first = eng.submit(PROMPT, {**GREEDY, **LOOKUP, "num_predict": 50}).result()
    assert first.draft_accepted < first.draft_count  # some drafts were rejected, their cells cut
    prompt = eng.tokenize(PROMPT) + list(first.tokens) + eng.tokenize(" abcde", add_special=False)
    again = eng.submit(prompt, {**GREEDY, "num_predict": 30}).result()
    assert again.cached_tokens >= len(prompt) - 8  # the cells of the first answer were reused
    assert again.tokens == plain(letters_model, prompt, {**GREEDY, "num_predict": 30}).tokens


def draft_steps(path: Path, prompt: str, draft: int, spec_gate: tuple[int, float, float, float],
                num_predict: int = 80, requests: int = 1) -> list[list[tuple[int, int]]]:
    """Each request's steps, stepped by hand on a fresh one-sequence context: (drafted, accepted) in each."""
    from power import native
    from power.engine.vocab import Vocab

    model = native.Model(str(path))
    ctx = native.Context(model, n_ctx=512, n_seq=1, n_batch=128, spec_gate=spec_gate)
    tokens = Vocab(model).tokenize(prompt)
    out = []
    try:
        for _ in range(requests):
            seq = ctx.submit(tokens, native.Sampling(temperature=0, num_predict=num_predict, draft=draft))
            steps: list[tuple[int, int]] = []
            done = False
            while not done:
                evs = [e for e in ctx.step().events if e.seq == seq]
                if evs:
                    before = (sum(d for d, _ in steps), sum(a for _, a in steps))
                    steps.append((evs[-1].n_drafted - before[0], evs[-1].n_accepted - before[1]))
                    done = any(e.finish for e in evs)
            out.append(steps)
    finally:
        ctx.close()
        model.close()
    return out


@pytest.mark.parametrize("cap", [16, 64])
def test_a_requests_first_draft_is_short_and_drafts_grow_while_accepted(letters_model: Path, cap: int) -> None:
    """Free text's first draft is mostly rejected (and costs its rows): each request starts at two tokens,
    whatever draft_num_predict allows, and drafts grow while they are accepted in full, up to the bound
    (PW_DRAFT_MAX, 64, the most)."""
    from power import native

    assert native.DRAFT_MAX == 64
    for steps in draft_steps(letters_model, "ecd ecd ecd ecd", cap, (0, 0.0, 0.0, 0.0), 160, requests=2):
        drafts = [s for s in steps if s[0] > 0]  # the second request starts short again
        assert drafts[0][0] == 2
        after_full = [b[0] for a, b in zip(drafts, drafts[1:]) if a[0] == a[1]]
        assert max(after_full) > 2 and max(d for d, _ in drafts) <= cap
        if cap > 16:
            assert max(d for d, _ in drafts) > 16


def test_lookup_without_draft_num_predict_drafts_up_to_the_most(eng: Engine, letters_model: Path) -> None:
    """draft_num_predict unset: lookup's drafts grow as long as they are accepted (and the gate finds they pay),
    up to 64, not to the draft model's 4."""
    prompt, opts = "ecd ecd ecd ecd", {"temperature": 0, "num_predict": 200}
    decodes = {}
    for name, extra in (("unset", {"draft_lookup": True}), ("16", {"draft_lookup": True, "draft_num_predict": 16})):
        before = eng.stats()["n_decode"]
        out = eng.submit(prompt, {**opts, **extra}).result()
        decodes[name] = eng.stats()["n_decode"] - before
        assert out.tokens == plain(letters_model, prompt, opts).tokens and out.draft_accepted > 100
    assert decodes["unset"] < decodes["16"]
