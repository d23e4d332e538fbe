"""Several choices of one prompt (OpenAI's ``n``): one prompt evaluation, the cells copied, a sampler each."""

from __future__ import annotations

from pathlib import Path

import pytest

from power import native
from power.engine import Engine, LoadOptions
from power.errors import InvalidRequest, NativeError

SAMPLED = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "num_predict": 12}
PROMPT = "a story about the sea, the wind and the ships that sail between the islands every morning"


def alone(model: Path, prompt: list[int], options: dict[str, object]) -> tuple[int, ...]:
    """The answer to ``prompt`` from a fresh engine that evaluates all of it in one sequence."""
    with Engine(str(model), LoadOptions(num_ctx=512, num_parallel=1)) as eng:
        return eng.submit(prompt, options).result().tokens


def delta(eng: Engine, before: dict[str, int], *keys: str) -> tuple[int, ...]:
    st = eng.stats()
    return tuple(st[k] - before[k] for k in keys)


def test_three_choices_evaluate_the_prompt_once_and_sample_on_their_own(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=3, num_batch=16)) as eng:
        prompt = eng.tokenize(PROMPT)
        assert len(prompt) > 16  # evaluated over several steps, while the other choices wait
        before = eng.stats()
        outs = [r.result() for r in eng.submit_choices(prompt, 3, {**SAMPLED, "seed": 7})]
        evaluated, copies, hits = delta(eng, before, "n_prompt_tokens", "kv_copies", "kv_hits")
        assert evaluated == len(prompt) and copies == 2 and hits == 2
        assert outs[0].evaluated == len(prompt)
        assert [o.cached_tokens for o in outs[1:]] == [len(prompt)] * 2
        assert all(o.prompt_eval_count == len(prompt) and o.done_reason == "length" for o in outs)
        assert all(len(o.tokens) == 12 for o in outs)
        assert len({o.tokens for o in outs}) == 3
        # choice i is what a request alone with seed 7 + i answers: the same logits, cells and sampler
        for i, out in enumerate(outs):
            assert out.tokens == alone(tiny_model, prompt, {**SAMPLED, "seed": 7 + i})


def test_greedy_choices_agree_and_unseeded_ones_differ(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=4)) as eng:
        prompt = eng.tokenize(PROMPT)
        greedy = [r.result().tokens for r in eng.submit_choices(prompt, 2, {"temperature": 0, "num_predict": 8})]
        assert greedy[0] == greedy[1] == alone(tiny_model, prompt, {"temperature": 0, "num_predict": 8})
        free = [r.result().tokens for r in eng.submit_choices(prompt, 4, SAMPLED)]
        assert len(set(free)) > 1


def test_choices_wait_for_enough_free_sequences(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=2)) as eng:
        prompt = eng.tokenize(PROMPT)
        busy = eng.submit(eng.tokenize("something else entirely"), {"temperature": 0, "num_predict": 30})
        before = eng.stats()
        choices = eng.submit_choices(prompt, 2, {**SAMPLED, "seed": 3})
        assert busy.result().done_reason == "length"
        outs = [r.result() for r in choices]
        assert delta(eng, before, "kv_copies") == (1,) and outs[1].cached_tokens == len(prompt)
        assert [o.tokens for o in outs] == [alone(tiny_model, prompt, {**SAMPLED, "seed": 3 + i}) for i in range(2)]


def test_a_queued_choice_cancelled_leaves_the_others(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=2, num_batch=8)) as eng:
        prompt = eng.tokenize(PROMPT)
        leader, other = eng.submit_choices(prompt, 2, {**SAMPLED, "seed": 11})
        leader.cancel()
        assert leader.result().done_reason == "cancel"
        out = other.result()
        assert out.done_reason == "length" and out.tokens == alone(tiny_model, prompt, {**SAMPLED, "seed": 12})


def sampling(seed: int) -> native.Sampling:
    return native.Sampling(seed=seed, top_k=0, top_p=1.0, temperature=1.5, repeat_last_n=0, num_predict=12)


def run(ctx: native.Context, seqs: set[int]) -> dict[int, list[native.Event]]:
    """Step until the sequences ``seqs`` end; their events."""
    events: dict[int, list[native.Event]] = {s: [] for s in seqs}
    live = set(seqs)
    while live:
        for ev in ctx.step().events:
            if ev.seq in events:
                events[ev.seq].append(ev)
                if ev.finish != native.FINISH_NONE:
                    live.discard(ev.seq)
    return events


def test_a_choice_whose_leader_ends_before_its_prompt_is_in_evaluates_it_itself(tiny_model: Path) -> None:
    with native.Model(tiny_model) as m:
        ctx = native.Context(m, n_ctx=512, n_seq=2, n_batch=8, n_ubatch=8)
        prompt = m.tokenize(PROMPT)
        leader = ctx.submit(prompt, sampling(11))
        choice = ctx.submit_choice(leader, sampling(12))
        assert ctx.step().n_decoded == 8  # the leader's first chunk; the choice waits for the rest
        ctx.cancel(leader)
        events = run(ctx, {leader, choice})
        assert events[leader][-1].finish == native.FINISH_CANCEL
        got = events[choice]
        assert got[-1].finish == native.FINISH_LENGTH and got[-1].n_cached == 8  # copied what the leader had
        ctx.close()
        fresh = native.Context(m, n_ctx=512, n_seq=1, n_batch=8, n_ubatch=8)
        reference = run(fresh, {fresh.submit(prompt, sampling(12))})
        fresh.close()
    assert [ev.token for ev in got] == [ev.token for evs in reference.values() for ev in evs]


def test_choices_of_a_leader_waiting_for_a_shared_prefix(tiny_model: Path) -> None:
    with native.Model(tiny_model) as m:
        prefix = m.tokenize("system: you are a careful assistant who answers every question briefly. " * 2)
        first = prefix + m.tokenize(" one question?", add_special=False)
        second = prefix + m.tokenize(" another question?", add_special=False)
        shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
        ctx = native.Context(m, n_ctx=512, n_seq=3, n_batch=16, n_ubatch=16)
        before = ctx.stats()
        other = ctx.submit(first, sampling(1))
        leader = ctx.submit(second, sampling(2))  # waits for `other` to evaluate the prefix, then copies it
        choice = ctx.submit_choice(leader, sampling(3))
        events = run(ctx, {other, leader, choice})
        st = ctx.stats()
        assert st["kv_waits"] - before["kv_waits"] == 1 and st["kv_copies"] - before["kv_copies"] == 2
        assert st["n_prompt_tokens"] - before["n_prompt_tokens"] == len(first) + len(second) - shared
        assert events[choice][-1].n_cached == len(second)
        ctx.close()
        fresh = native.Context(m, n_ctx=512, n_seq=1, n_batch=16, n_ubatch=16)
        for seq, seed in ((leader, 2), (choice, 3)):
            ref = run(fresh, {fresh.submit(second, sampling(seed))})
            fresh.clear()
            assert [ev.token for ev in events[seq]] == [ev.token for evs in ref.values() for ev in evs]
        fresh.close()


def test_a_choice_needs_a_leader_with_its_prompt_still_to_evaluate(tiny_model: Path) -> None:
    with native.Model(tiny_model) as m:
        ctx = native.Context(m, n_ctx=256, n_seq=3)
        with pytest.raises(NativeError, match="no sequence 7"):
            ctx.submit_choice(7, sampling(1))
        with pytest.raises(NativeError, match="no prompt still to evaluate"):
            ctx.submit_choice(0, sampling(1))  # idle
        leader = ctx.submit(m.tokenize("hi there"), sampling(1))
        first = ctx.submit_choice(leader, sampling(2))
        second = ctx.submit_choice(first, sampling(3))  # a choice of a choice follows the same leader
        events = run(ctx, {leader, first, second})
        n = len(m.tokenize("hi there"))
        assert [events[s][-1].n_cached for s in (leader, first, second)] == [0, n, n]
        with pytest.raises(NativeError, match="no prompt still to evaluate"):
            ctx.submit_choice(leader, sampling(1))  # it generated already
        ctx.close()


@pytest.mark.parametrize("n", [0, -1, 2.0, True, 4])
def test_bad_or_too_many_choices_are_refused(tiny_model: Path, n: object) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=256, num_parallel=3)) as eng:
        with pytest.raises(InvalidRequest, match="3 parallel sequences" if n == 4 else "positive integer"):
            eng.submit_choices("hello", n, {"num_predict": 2})  # type: ignore[arg-type]
        assert eng.stats()["n_waiting"] == 0
