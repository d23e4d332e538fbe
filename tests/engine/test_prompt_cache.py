"""The prompt cache beyond one sequence: prefixes shared across sequences, prompt states kept in host memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from power.engine import Engine, LoadOptions

GREEDY = {"temperature": 0, "num_predict": 12}
SYSTEM = "system: you are a careful assistant who answers every question briefly and politely. "


def tokens(eng: Engine, text: str) -> list[int]:
    return eng.tokenize(text, add_special=False)


def alone(model: Path, prompt: list[int], **opts: object) -> tuple[int, ...]:
    """The greedy answer to `prompt` from a fresh engine that evaluates all of it."""
    with Engine(str(model), LoadOptions(num_ctx=512, num_parallel=1)) as eng:
        return eng.submit(prompt, {**GREEDY, **opts}).result().tokens


def delta(eng: Engine, before: dict[str, int], *keys: str) -> tuple[int, ...]:
    st = eng.stats()
    return tuple(st[k] - before[k] for k in keys)


def test_running_sequences_share_a_prefix(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=3, num_batch=64)) as eng:
        prefix = [eng.info.token_bos] + tokens(eng, SYSTEM)
        prompts = [prefix + tokens(eng, q) for q in ("one question?", "two questions?", "a third one?")]
        first = eng.submit(prompts[0], {"temperature": 0, "num_predict": 400})
        stream = iter(first)
        next(stream)  # generating now: its cells hold the prefix
        before = eng.stats()
        second = eng.submit(prompts[1], {"temperature": 0, "num_predict": 300})
        second_first = next(iter(second))
        # the third copies from whichever running sequence holds the prefix
        third = eng.submit(prompts[2], GREEDY).result()
        second.cancel()
        first.cancel()
        second_out = second.result()
        assert third.evaluated == len(prompts[2]) - len(prefix)
        assert third.cached_tokens == len(prefix) and third.prompt_eval_count == len(prompts[2])
        assert second_out.cached_tokens == len(prefix)
        copies, shared, evaluated = delta(eng, before, "kv_copies", "kv_shared_tokens", "n_prompt_tokens")
        assert copies == 2 and shared == 2 * len(prefix)
        assert evaluated == len(prompts[1]) + len(prompts[2]) - 2 * len(prefix)
        assert third.tokens == alone(tiny_model, prompts[2])
        assert (second_first.tokens + second_out.tokens)[:12] == alone(tiny_model, prompts[1])


def test_requests_arriving_together_evaluate_their_prefix_once(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=4, num_batch=64)) as eng:
        prefix = [eng.info.token_bos] + tokens(eng, SYSTEM * 2)
        prompts = [prefix + tokens(eng, x) for x in ("cats are nice", "the sea is deep", "mountains are high")]
        before = eng.stats()
        results = [r.result() for r in eng.submit_many(prompts, GREEDY)]
        assert results[0].evaluated == len(prompts[0])
        assert [r.evaluated for r in results[1:]] == [len(p) - len(prefix) for p in prompts[1:]]
        waits, evaluated = delta(eng, before, "kv_waits", "n_prompt_tokens")
        assert waits == 2 and evaluated == sum(len(p) for p in prompts) - 2 * len(prefix)
        assert [r.tokens for r in results] == [alone(tiny_model, p) for p in prompts]


def test_a_waiting_request_starts_when_its_source_is_cancelled(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=2, num_batch=16)) as eng:
        prefix = [eng.info.token_bos] + tokens(eng, SYSTEM * 2)
        source, waiter = eng.submit_many([prefix + tokens(eng, "a"), prefix + tokens(eng, "b")], GREEDY)
        source.cancel()
        out = waiter.result()
        assert out.done_reason == "length" and out.tokens == alone(tiny_model, prefix + tokens(eng, "b"))


def conversation(eng: Engine, topic: str) -> list[int]:
    """A first turn; conversations on different topics share only the first token."""
    return [eng.info.token_bos] + tokens(eng, f"{topic} are what we talk about for a while, in some detail. ")


def test_an_evicted_conversation_is_restored_from_ram(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=2), cache_ram=64 << 20) as eng:
        turn1 = conversation(eng, "rivers")
        answer = eng.submit(turn1, GREEDY).result()
        for topic in ("deserts", "volcanoes", "glaciers"):  # two sequences: its cells are given away
            eng.submit(conversation(eng, topic), GREEDY).result()
        st = eng.stats()
        assert st["ram_saves"] >= 2 and st["ram_entries"] >= 2 and 0 < st["ram_bytes"] <= st["ram_budget"]
        turn2 = turn1 + list(answer.tokens) + tokens(eng, " user: and what about their sources?")
        before = eng.stats()
        second = eng.submit(turn2, GREEDY).result()
        # all but the new part (and the last answer token, never decoded) comes back from host memory
        assert second.evaluated == len(turn2) - len(turn1) - len(answer.tokens) + 1
        hits, restored = delta(eng, before, "ram_hits", "ram_restored_tokens")
        assert hits == 1 and restored == second.cached_tokens
        assert second.tokens == alone(tiny_model, turn2)


def test_ram_cache_keeps_its_bound_dropping_the_oldest_first(tiny_model: Path) -> None:
    topics = ("apples", "bridges", "castles", "dragons")
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=1), cache_ram=64 << 20) as probe:
        prompts = {t: conversation(probe, t)[:40] for t in topics}
        probe.submit(prompts["apples"], GREEDY).result()
        probe.submit(prompts["bridges"], GREEDY).result()
        one = probe.stats()["ram_bytes"]
    assert one > 0
    budget = int(one * 2.5)  # room for two saved states
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=1), cache_ram=budget) as eng:
        for t in topics:  # one sequence: each prompt pushes the one before into host memory
            eng.submit(prompts[t], GREEDY).result()
        st = eng.stats()
        assert st["ram_saves"] == 3 and st["ram_evictions"] == 1 and st["ram_entries"] == 2
        assert st["ram_bytes"] <= budget
        # apples, saved first, went first; castles stayed (saving dragons now drops bridges)
        # (the prompts share only their first token, which stays in the sequence)
        assert eng.submit(prompts["apples"], GREEDY).result().evaluated == len(prompts["apples"]) - 1
        assert eng.submit(prompts["castles"], GREEDY).result().evaluated == 1
        assert eng.submit(prompts["bridges"], GREEDY).result().evaluated == len(prompts["bridges"]) - 1
        assert eng.stats()["ram_bytes"] <= budget


def test_no_ram_cache_when_turned_off(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=1), cache_ram=0) as eng:
        first = conversation(eng, "owls")
        eng.submit(first, GREEDY).result()
        eng.submit(conversation(eng, "bees"), GREEDY).result()
        assert eng.submit(first, GREEDY).result().evaluated == len(first) - 1  # only the first token is kept
        st = eng.stats()
        assert st["ram_entries"] == 0 and st["ram_saves"] == 0 and st["ram_budget"] == 0


@pytest.mark.parametrize("cache_ram", [0, 64 << 20])
def test_clear_cache_forgets_every_tier(tiny_model: Path, cache_ram: int) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=1), cache_ram=cache_ram) as eng:
        first = conversation(eng, "stars")
        eng.submit(first, GREEDY).result()
        eng.submit(conversation(eng, "moons"), GREEDY).result()
        eng.clear_cache()
        assert eng.stats()["ram_entries"] == 0
        assert eng.submit(first, GREEDY).result().evaluated == len(first)
