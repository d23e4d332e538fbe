"""The speculation gate: each step, prompt lookup's drafts and the draft model's are made only when the tokens
they are expected to add beat their cost (a target decode's cost by rows, the draft model's steps), so that
speculation is on only where it wins. The costs are fixed here (LoadOptions.spec_costs "STEP,ROW,DRAFT" in
microseconds, a3s-power's setting spec_costs) so that the decisions are deterministic; the measured estimates
are the engine's default.
Whatever the gate decides, the output is what decoding one token a step gives.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from power.engine import Engine, LoadOptions

PROMPT = "abcde abcde cdcd abcde"
N = 60
GREEDY = {"temperature": 0, "num_predict": N}
DRAFT = {"draft_num_predict": 6}
LOAD = LoadOptions(num_ctx=512, num_parallel=4, num_batch=64)
MEMORY_BOUND = "1000,0,0"      # extra rows and draft steps cost nothing
COMPUTE_BOUND = "0,1000,0"     # every row costs as much as a whole step: drafted tokens at best pay for themselves
COSTLY_DRAFT = "1000,0,100000" # rows free, a draft model step a hundred target steps


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tinymodels import write_llama

    folder = tmp_path_factory.mktemp("models")
    letters = ("a", "b", "c", "d", "e")
    return {
        "target": write_llama(folder / "letters.gguf", seed=1, favour=letters, favour_bias=30.0),
        # A draft that writes only letters the target never writes: every proposal is rejected.
        "wrong": write_llama(folder / "wrong.gguf", seed=2, n_layer=1, favour=("x", "y", "z"), favour_bias=60.0),
    }


def run(models: dict[str, Path], costs: str, options: dict[str, object], draft: str | None = None):
    """One greedy answer from a fresh engine whose gate uses `costs`, with the engine's stats after it."""
    kw = {"draft": str(models[draft])} if draft else {}
    with Engine(str(models["target"]), replace(LOAD, spec_costs=costs), **kw) as e:
        out = e.submit(PROMPT, {**GREEDY, **options}).result()
        return out, e.stats()


@pytest.fixture(scope="module")
def plain(models: dict[str, Path]):
    """Decoding one token a step."""
    with Engine(str(models["target"]), LoadOptions(num_ctx=512, num_parallel=1)) as e:
        return e.submit(PROMPT, GREEDY).result()


def test_a_draft_equal_to_the_target_keeps_drafting_where_rows_are_free(models, plain) -> None:
    out, st = run(models, MEMORY_BOUND, DRAFT, "target")
    assert out.tokens == plain.tokens and out.text == plain.text
    assert out.draft_count >= 40 and out.draft_accepted >= 0.9 * out.draft_count
    assert st["n_draft_skipped"] == 0
    assert st["n_decode"] <= N // 4 + 2  # several tokens a target decode (the prompt's decode included)


def test_a_draft_always_rejected_stops_after_a_bounded_number_of_steps(models, plain) -> None:
    ungated, st_off = run(models, "off", DRAFT, "wrong")
    gated, st = run(models, MEMORY_BOUND, DRAFT, "wrong")
    assert ungated.tokens == gated.tokens == plain.tokens
    assert ungated.draft_accepted == gated.draft_accepted == 0
    assert st_off["n_draft_skipped"] == 0 and ungated.draft_count >= (N - 1) * 5
    # Drafts until the acceptance estimate falls from its prior (half a token) below a twentieth (nine
    # steps), then only the re-probes after 16 and 32 more steps: at most a dozen of the steps.
    assert 0 < gated.draft_count <= 12 * DRAFT["draft_num_predict"]
    assert st["n_draft_skipped"] >= N - 2 - 12  # the steps that could draft (room for one) but for those
    assert st["n_decode"] == N  # one token a step: the prompt's decode, then N - 1


def test_compute_bound_steps_draft_with_neither_kind(models, plain) -> None:
    # Drafts accepted in full only pay for their rows: not worth a step's risk, for lookup or the model.
    lookup, st = run(models, COMPUTE_BOUND, {"draft_lookup": True, "draft_num_predict": 8}, None)
    assert lookup.tokens == plain.tokens
    both, st2 = run(models, COMPUTE_BOUND, {**DRAFT, "draft_lookup": True}, "target")
    assert both.tokens == plain.tokens
    for out, stats in ((lookup, st), (both, st2)):
        assert stats["n_draft_skipped"] >= N // 2  # the steps where lookup found a draft, or the model would draft
    # Each kind drafts in its first step only: no re-probes within 512 steps, as even drafts accepted in full
    # would lose.
    assert 0 < lookup.draft_count <= 8 and 0 < both.draft_count <= 8 + 6
    # The same requests where rows are free draft all along.
    free, st3 = run(models, MEMORY_BOUND, {"draft_lookup": True, "draft_num_predict": 8}, None)
    assert free.tokens == plain.tokens and free.draft_count > 20 and free.draft_count > 2 * lookup.draft_count


def test_a_costly_draft_model_switches_itself_off_while_lookup_stays(models, plain) -> None:
    out, st = run(models, COSTLY_DRAFT, {**DRAFT, "draft_lookup": True}, "target")
    assert out.tokens == plain.tokens
    free, _ = run(models, MEMORY_BOUND, {**DRAFT, "draft_lookup": True}, "target")
    assert free.tokens == plain.tokens
    # Lookup's drafts are still made (rows are free); the model's only in the first steps and re-probes.
    assert st["n_draft_skipped"] > 0 and out.draft_accepted > 0
    assert out.draft_count < free.draft_count


# A code rewrite's output (periodic here) accepts most of lookup's drafts; free text hardly any.
REWRITE, FREE = "ecd ecd ecd ecd", "cccc"
LOOKUP = {**GREEDY, "draft_lookup": True, "draft_num_predict": 8}
DEAR_ROWS = "1000,200,0"  # a row a fifth of a step: only drafts mostly accepted pay


def test_acceptance_is_per_request_so_free_text_does_not_turn_lookup_off_for_the_next(models) -> None:
    load = replace(LOAD, num_parallel=1, spec_costs=DEAR_ROWS)
    with Engine(str(models["target"]), load) as e:
        alone = e.submit(REWRITE, LOOKUP).result()
    with Engine(str(models["target"]), load) as e:
        free = e.submit(FREE, LOOKUP).result()
        skipped = e.stats()["n_draft_skipped"]
        after = e.submit(REWRITE, LOOKUP).result()
    assert skipped > 0 and free.draft_accepted <= 1  # the free answer's drafts lost: the gate left them out
    # The same sequence, the next request: it drafts as it does alone (the gate's costs are fixed here, so
    # its decisions are the same), not the few re-probes of an estimate the free text left low.
    assert after.tokens == alone.tokens
    assert (after.draft_count, after.draft_accepted) == (alone.draft_count, alone.draft_accepted)
    assert alone.draft_count >= 40 and alone.draft_accepted >= 0.6 * alone.draft_count


def test_a_draft_models_acceptance_is_per_request_too(models) -> None:
    """The target drafting for itself: an answer sampled at a very high temperature rejects its greedy drafts,
    and the gate leaves them out; the greedy answer after it drafts as it does alone."""
    load = replace(LOAD, num_parallel=1, spec_costs=DEAR_ROWS)
    opts = {**GREEDY, **DRAFT}
    with Engine(str(models["target"]), load, draft=str(models["target"])) as e:
        alone = e.submit(REWRITE, opts).result()
    with Engine(str(models["target"]), load, draft=str(models["target"])) as e:
        sampled = e.submit(FREE, {**opts, "temperature": 20.0, "top_k": 0, "top_p": 1.0, "seed": 7,
                                  "num_predict": 100}).result()
        skipped = e.stats()["n_draft_skipped"]
        after = e.submit(REWRITE, opts).result()
    assert skipped >= 80 and sampled.draft_accepted <= 0.1 * sampled.draft_count
    assert after.tokens == alone.tokens
    assert (after.draft_count, after.draft_accepted) == (alone.draft_count, alone.draft_accepted) != (0, 0)


def test_requests_do_not_start_with_a_draft_that_could_not_pay_even_accepted_in_full(models, plain) -> None:
    """Per-request estimates start afresh, but the engine's costs are known: with a draft model step a
    hundred target steps, no request begins by probing it (the probe would first catch up on the prompt)."""
    with Engine(str(models["target"]), replace(LOAD, spec_costs=COSTLY_DRAFT), draft=str(models["target"])) as e:
        outs = [e.submit(PROMPT, {**GREEDY, **DRAFT}).result() for _ in range(2)]
        st = e.stats()
    for out in outs:
        assert out.tokens == plain.tokens and out.draft_count == 0
    assert st["n_draft_skipped"] >= 2 * (N - 2) and st["n_draft_caught_up"] == 0


def test_where_rows_cost_the_gate_cuts_lookup_drafts_to_the_length_that_pays(models) -> None:
    """Rows free: a draft accepted in full grows to tens of tokens. A row a fifth of a step: the expected tokens
    a unit of time peak at a shorter length (each further token is less likely to be accepted and costs as
    much), so the drafts are cut there, but drafting goes on and the output is the same."""
    from tests.engine.test_speculative import draft_steps

    free = draft_steps(models["target"], REWRITE, 64, (2, 1000.0, 0.0, 0.0), 160)[0]
    dear = draft_steps(models["target"], REWRITE, 64, (2, 1000.0, 200.0, 0.0), 160)[0]
    longest = {name: max(d for d, _ in steps) for name, steps in (("free", free), ("dear", dear))}
    assert longest["free"] > 16 and 2 < longest["dear"] < longest["free"]
    assert sum(a for _, a in dear) >= 40


BREAK_EVEN_DRAFT = "1000,0,5800"  # a draft model step 5.8 target steps: 6 tokens accepted in full win 3%
CLEAR_DRAFT = "1000,0,5000"       # 5 target steps: accepted in full, 6 tokens win 17%


def test_requests_start_with_a_draft_model_only_where_a_draft_accepted_in_full_wins_clearly(models, plain) -> None:
    """A draft model's probe first catches up on the whole prompt: a request does not start with one that,
    accepted in full, would win less than the hysteresis (it could never pay that back), and does where it
    wins clearly. Fewer steps than the first re-probe, so the start is all there is."""
    short = {**GREEDY, **DRAFT, "num_predict": 12}
    for costs, starts in ((BREAK_EVEN_DRAFT, False), (CLEAR_DRAFT, True)):
        with Engine(str(models["target"]), replace(LOAD, spec_costs=costs), draft=str(models["target"])) as e:
            out = e.submit(PROMPT, short).result()
            st = e.stats()
        assert out.tokens == plain.tokens[:12]
        if starts:
            assert out.draft_count >= DRAFT["draft_num_predict"] and st["n_draft_caught_up"] > 0
        else:
            assert out.draft_count == 0 and st["n_draft_caught_up"] == 0 and st["n_draft_skipped"] >= 10
