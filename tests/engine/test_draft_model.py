"""Speculative decoding with a draft model: a second model of the same vocabulary, in its own context in the
same engine, drafts for every sequence; the target verifies in its batch as it does prompt lookup's drafts.

A draft equal to the target drafts what the target writes (almost every token accepted); a draft with other
weights is often wrong. Either way the output must be what decoding one token a step gives.
"""

from __future__ import annotations

import math
import time
import re
from pathlib import Path

import pytest

from power.engine import Engine, LoadOptions

# These tests are about verifying drafts: every draft asked for is made, no speculation gate
# (test_spec_gate.py covers the gate).
UNGATED = "off"

PROMPT = "abcde abcde cdcd abcde"
GREEDY = {"temperature": 0, "num_predict": 60}
DRAFT = {"draft_num_predict": 6}
LOAD = LoadOptions(num_ctx=512, num_parallel=4, num_batch=64, spec_costs=UNGATED)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.tinymodels import write_llama

    folder = tmp_path_factory.mktemp("models")
    target = write_llama(folder / "letters.gguf", seed=1, favour=("a", "b", "c", "d", "e"), favour_bias=30.0)
    other = write_llama(folder / "other.gguf", seed=2, n_layer=1, favour=("a", "b", "c", "d", "e"),
                        favour_bias=30.0)
    return target, other


@pytest.fixture(scope="module")
def same(models: tuple[Path, Path]):
    """The target drafting for itself."""
    with Engine(str(models[0]), LOAD, draft=str(models[0])) as e:
        yield e


@pytest.fixture(scope="module")
def other(models: tuple[Path, Path]):
    with Engine(str(models[0]), LOAD, draft=str(models[1])) as e:
        yield e


def plain(model: Path, prompt: object, options: dict[str, object], **kw: object):
    """The answer from a fresh engine without a draft, decoding one token a step."""
    with Engine(str(model), LoadOptions(num_ctx=512, num_parallel=1)) as e:
        return e.submit(prompt, options, **kw).result()


def test_a_draft_equal_to_the_target_is_almost_always_accepted(same: Engine, models: tuple[Path, Path]) -> None:
    before = same.stats()
    on = same.submit(PROMPT, {**GREEDY, **DRAFT}).result()
    off = plain(models[0], PROMPT, GREEDY)
    assert on.tokens == off.tokens and on.text == off.text and len(on.tokens) == 60
    assert on.draft_count >= 40 and on.draft_accepted >= 0.9 * on.draft_count
    st = same.stats()
    assert st["n_draft_tokens"] - before["n_draft_tokens"] == on.draft_count
    assert st["n_decode"] - before["n_decode"] <= 60 // 4  # several tokens a target decode


def test_a_different_draft_is_often_rejected_and_changes_nothing(other: Engine, models: tuple[Path, Path]) -> None:
    on = other.submit(PROMPT, {**GREEDY, **DRAFT}).result()
    assert on.tokens == plain(models[0], PROMPT, GREEDY).tokens
    assert 0 < on.draft_accepted < on.draft_count


def test_draft_num_predict_zero_and_p_min_bound_the_drafts(same: Engine, other: Engine) -> None:
    assert same.submit(PROMPT, {**GREEDY, "draft_num_predict": 0}).result().draft_count == 0
    before = same.stats()
    one = same.submit(PROMPT, {**GREEDY, "draft_num_predict": 1}).result()
    assert 0 < one.draft_count <= same.stats()["n_decode"] - before["n_decode"]
    # Confident drafts only: a draft stops at its first token below draft_p_min.
    loose = other.submit(PROMPT, {**GREEDY, **DRAFT}).result()
    strict = other.submit(PROMPT, {**GREEDY, **DRAFT, "draft_p_min": 0.9}).result()
    assert strict.tokens == loose.tokens and 0 < strict.draft_count < loose.draft_count
    assert other.submit(PROMPT, {**GREEDY, **DRAFT, "draft_p_min": 1.0}).result().draft_count < strict.draft_count


@pytest.mark.parametrize("which", ["same", "other"])
def test_several_sequences_with_and_without_drafts_share_the_batch(which: str, request: pytest.FixtureRequest,
                                                                   models: tuple[Path, Path]) -> None:
    eng: Engine = request.getfixturevalue(which)
    prompts = [PROMPT, "ccddee abab", "edcba edcba", PROMPT + " ab"]
    options = [{**GREEDY, **DRAFT}, {**GREEDY, "draft_num_predict": 0}, {**GREEDY, **DRAFT, "num_predict": 33},
               {**GREEDY, "draft_num_predict": 3, "draft_lookup": True}]
    reqs = [eng.submit(p, o) for p, o in zip(prompts, options)]
    outs = [r.result() for r in reqs]
    for p, o, out in zip(prompts, options, outs):
        assert out.tokens == plain(models[0], p, {k: v for k, v in o.items() if not k.startswith("draft")}).tokens
    assert [len(o.tokens) for o in outs] == [60, 60, 33, 60]
    assert outs[1].draft_count == 0 and all(outs[i].draft_count > 0 for i in (0, 2, 3))


@pytest.mark.parametrize("n", [1, 2, 7, 13])
def test_num_predict_holds(other: Engine, n: int) -> None:
    out = other.submit(PROMPT, {**GREEDY, **DRAFT, "num_predict": n}).result()
    assert len(out.tokens) == out.eval_count == n and out.done_reason == "length"


def test_sampled_grammar_stops_and_logprobs_hold(other: Engine, models: tuple[Path, Path]) -> None:
    sampled = {"temperature": 0.7, "top_k": 5, "seed": 11, "num_predict": 50}
    on = other.submit(PROMPT, {**sampled, **DRAFT}).result()
    assert on.tokens == plain(models[0], PROMPT, sampled).tokens and on.draft_count > 0
    grammar = 'root ::= ("ab" | "cd" | "e")+ "."'
    g = other.submit(PROMPT, {**GREEDY, **DRAFT}, grammar=grammar).result()
    assert re.fullmatch(r"(ab|cd|e)+\.?", g.text) and g.draft_count > 0
    assert g.tokens == plain(models[0], PROMPT, GREEDY, grammar=grammar).tokens
    full = plain(models[0], PROMPT, GREEDY).text
    stop = full[20:23]
    s = other.submit(PROMPT, {**GREEDY, **DRAFT, "stop": [stop]}).result()
    assert s.done_reason == "stop" and s.text == full[:full.index(stop)]
    lp = other.submit(PROMPT, {**GREEDY, **DRAFT}, logprobs=3).result()
    ref = plain(models[0], PROMPT, GREEDY, logprobs=3)
    assert lp.draft_accepted > 0 and len(lp.logprobs) == len(ref.logprobs) == 60
    for a, b in zip(lp.logprobs, ref.logprobs):  # the target's, not the draft's
        assert a.token == b.token and math.isclose(a.logprob, b.logprob, abs_tol=2e-3)


def test_the_draft_follows_the_prompt_cache(same: Engine, models: tuple[Path, Path]) -> None:
    """A conversation going on reuses the target's cells (and a prefix copied to another sequence); the draft
    catches up by comparing tokens, so its drafts stay right (almost all accepted)."""
    first = same.submit(PROMPT, {**GREEDY, **DRAFT, "num_predict": 40}).result()
    prompt = same.tokenize(PROMPT) + list(first.tokens) + same.tokenize(" abcde", add_special=False)
    reqs = [same.submit(prompt, {**GREEDY, **DRAFT, "num_predict": 30}) for _ in range(3)]
    outs = [r.result() for r in reqs]
    ref = plain(models[0], prompt, {**GREEDY, "num_predict": 30})
    for out in outs:
        assert out.tokens == ref.tokens and out.draft_accepted >= 0.9 * out.draft_count > 0
    assert max(o.cached_tokens for o in outs) >= len(prompt) - 8


LONG = " ".join(["abcde cdcd"] * 24)  # a prompt worth sharing: about 240 tokens


def test_choices_of_one_prompt_copy_the_draft_cells_instead_of_evaluating_them_each(
        models: tuple[Path, Path]) -> None:
    """OpenAI's n: the choices take the first one's target cells; their draft cells follow, copied from the
    one that caught up on the prompt, instead of the draft model evaluating the prompt once for each."""
    n_prompt = len(plain_tokens(models[0], LONG))
    with Engine(str(models[0]), LOAD, draft=str(models[0])) as e:
        outs = [r.result() for r in e.submit_choices(LONG, 3, {**GREEDY, **DRAFT, "num_predict": 30})]
        st = e.stats()
    ref = plain(models[0], LONG, {**GREEDY, "num_predict": 30})
    for out in outs:
        assert out.tokens == ref.tokens and out.draft_accepted >= 0.9 * out.draft_count > 0
    assert st["n_draft_copies"] >= 2 and st["n_draft_copied_tokens"] >= 2 * (n_prompt - 8)
    # The prompt once, then each sequence's own tokens (its first token, rejected drafts re-fed).
    assert st["n_draft_caught_up"] < n_prompt + 3 * 40


def test_a_prefix_copied_by_the_prompt_cache_takes_the_draft_cells_with_it(models: tuple[Path, Path]) -> None:
    """A request whose prefix another sequence holds copies the target's cells from there; the draft's
    cells come from there too, so the draft does not evaluate that prefix again. Stepped by hand, so that
    the second request comes while the first is generating."""
    from power import native

    model = native.Model(str(models[0]))
    ctx = native.Context(model, n_ctx=512, n_seq=4, n_batch=64, spec_gate=(0, 0.0, 0.0, 0.0))
    ctx.set_draft(model)
    prefix = plain_tokens(models[0], LONG)
    second_prompt = prefix + plain_tokens(models[0], " cdcd")[1:]  # without BOS
    sampling = native.Sampling(temperature=0, num_predict=30, draft_model=6)
    try:
        first = ctx.submit(prefix + plain_tokens(models[0], " abcde")[1:], sampling)
        while ctx.stats()["n_draft_tokens"] == 0:  # the first one drafts: its draft cells hold the prefix
            ctx.step()
        before = ctx.stats()
        second = ctx.submit(second_prompt, sampling)
        assert second != first
        tokens: list[int] = []
        while ctx.stats()["n_active"]:
            tokens += [ev.token for ev in ctx.step().events if ev.seq == second and ev.token >= 0 and not ev.finish]
        st = ctx.stats()
    finally:
        ctx.close()
        model.close()
    ref = plain(models[0], second_prompt, {**GREEDY, "num_predict": 30})
    assert tokens == list(ref.tokens)[:len(tokens)] and len(tokens) >= 29
    assert st["kv_copies"] > before["kv_copies"]  # the target's cells came from the first sequence
    assert st["n_draft_copies"] == before["n_draft_copies"] + 1
    assert st["n_draft_copied_tokens"] - before["n_draft_copied_tokens"] >= len(prefix) - 8
    # What the draft evaluated since: the second's few own prompt tokens and both sequences' rejected drafts
    # re-fed, never the shared prefix again.
    assert st["n_draft_caught_up"] - before["n_draft_caught_up"] < len(prefix) // 2


def plain_tokens(model: Path, text: str) -> list[int]:
    with Engine(str(model), LoadOptions(num_ctx=512, num_parallel=1)) as e:
        return e.tokenize(text)


OTHER_LONG = " ".join(["edcba baba"] * 24)  # shares only BOS with LONG
ONE_SEQ = LoadOptions(num_ctx=512, num_parallel=1, num_batch=64, spec_costs=UNGATED)


def next_turn(model: Path, first: tuple[int, ...]) -> list[int]:
    return plain_tokens(model, LONG) + list(first) + plain_tokens(model, " abcde")[1:]


def test_a_state_restored_from_ram_brings_its_draft_cells(models: tuple[Path, Path]) -> None:
    """A conversation whose cells went to host memory (one sequence, another prompt took it) comes back with
    the draft context's cells of its prefix: the draft evaluates only the new tokens, and drafts from the
    restored prefix, not from what the sequence held before (a draft equal to the target is then accepted)."""
    with Engine(str(models[0]), ONE_SEQ, cache_ram=64 << 20, draft=str(models[0])) as e:
        first = e.submit(LONG, {**GREEDY, **DRAFT, "num_predict": 20}).result()
        e.submit(OTHER_LONG, {**GREEDY, **DRAFT, "num_predict": 20}).result()  # LONG's state goes to host memory
        turn2 = next_turn(models[0], first.tokens)
        before = e.stats()
        second = e.submit(turn2, {**GREEDY, **DRAFT, "num_predict": 30}).result()
        st = e.stats()
    assert st["ram_hits"] - before["ram_hits"] == 1 and second.cached_tokens >= len(turn2) - 8
    assert second.tokens == plain(models[0], turn2, {**GREEDY, "num_predict": 30}).tokens
    assert second.draft_accepted >= 0.9 * second.draft_count > 0
    # The new tokens and rejected drafts re-fed; the restored prefix (~260 tokens) is not evaluated again.
    assert st["n_draft_caught_up"] - before["n_draft_caught_up"] < len(turn2) // 4


def test_a_state_restored_from_disk_brings_its_draft_cells(models: tuple[Path, Path], tmp_path: Path) -> None:
    """The disk tier keeps the draft's cells beside the target's across an engine restart; a draft with other
    weights gives the same greedy output from them."""
    disk = (str(tmp_path / "states"), 64 << 20)
    for draft in models:
        with Engine(str(models[0]), ONE_SEQ, cache_ram=64 << 20, cache_disk=disk, draft=str(draft)) as e:
            first = e.submit(LONG, {**GREEDY, **DRAFT, "num_predict": 20}).result()
        turn2 = next_turn(models[0], first.tokens)
        with Engine(str(models[0]), ONE_SEQ, cache_ram=64 << 20, cache_disk=disk, draft=str(draft)) as e:
            assert e.stats()["disk_loaded"] == 1
            second = e.submit(turn2, {**GREEDY, **DRAFT, "num_predict": 30}).result()
            st = e.stats()
        assert st["disk_hits"] == 1 and second.cached_tokens >= len(turn2) - 8
        assert second.tokens == plain(models[0], turn2, {**GREEDY, "num_predict": 30}).tokens
        assert second.draft_count > 0 and st["n_draft_caught_up"] < len(turn2) // 4
        if draft == models[0]:
            assert second.draft_accepted >= 0.9 * second.draft_count
    # Each draft model keys its own folder: a state's draft cells are never restored into another draft.
    assert len(list((tmp_path / "states").iterdir())) == 2


def test_a_disk_state_of_the_format_before_the_draft_cells_is_refused(models: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    """Version 2 files (no draft state) are removed on opening, never loaded."""
    disk = (str(tmp_path / "states"), 64 << 20)
    with Engine(str(models[0]), ONE_SEQ, cache_ram=64 << 20, cache_disk=disk, draft=str(models[0])) as e:
        e.submit(LONG, {**GREEDY, "num_predict": 4}).result()
    (path,) = (tmp_path / "states").glob("*/*.pwkv")
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"PWKV" and int.from_bytes(raw[4:8], "little") == 3
    raw[4:8] = (2).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with Engine(str(models[0]), ONE_SEQ, cache_ram=64 << 20, cache_disk=disk, draft=str(models[0])) as e:
        assert e.stats()["disk_loaded"] == 0
    assert not path.exists()
