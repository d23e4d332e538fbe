"""A step's batch levelled for llama.cpp's split into ubatches (csrc/level.cpp): sequences with fewer tokens
in a step decode their last cached tokens again, so that one ubatch takes every sequence at one length. The
cells are the same, so every answer is what the request alone gives, and the levelled sequences' cached
prefixes stay usable."""

from __future__ import annotations

from pathlib import Path

from power.engine import Engine, LoadOptions

GREEDY = {"temperature": 0, "num_predict": 8}
TOPICS = ("cats", "the sea", "mountains", "old trains")


def alone(model: Path, prompt: list[int], n: int = 8) -> tuple[int, ...]:
    with Engine(str(model), LoadOptions(num_ctx=512, num_parallel=1)) as eng:
        return eng.submit(prompt, {**GREEDY, "num_predict": n}).result().tokens


def unequal_suffixes(eng: Engine) -> tuple[list[list[int]], list[list[int]]]:
    """Four first turns, one sequence each (cells kept), and a next turn for each with suffixes of unequal
    length."""
    firsts = [[eng.info.token_bos] + eng.tokenize(f"{t} are what we talk about today, at some length. ",
                                                  add_special=False) for t in TOPICS]
    for p in firsts:
        eng.submit(p, GREEDY).result()
    return firsts, [p + eng.tokenize(" and" + " more" * (i + 1), add_special=False) for i, p in enumerate(firsts)]


def test_suffixes_of_unequal_length_are_levelled_and_answer_as_alone(tiny_model: Path) -> None:
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=4, num_batch=64)) as eng:
        firsts, follow = unequal_suffixes(eng)
        before = eng.stats()
        outs = [r.result() for r in eng.submit_many(follow, GREEDY)]
        st = eng.stats()
        assert st["n_level_tokens"] > before["n_level_tokens"]
        assert all(o.cached_tokens >= len(p) - 1 for o, p in zip(outs, firsts))
        assert [o.tokens for o in outs] == [alone(tiny_model, p) for p in follow]
        # The re-decoded cells are the same: each conversation still goes on from its cache.
        again = [f + list(o.tokens) + eng.tokenize(" ok", add_special=False) for f, o in zip(follow, outs)]
        outs2 = [eng.submit(p, GREEDY).result() for p in again]
        assert all(o.cached_tokens >= len(f) for o, f in zip(outs2, follow))
        assert [o.tokens for o in outs2] == [alone(tiny_model, p) for p in again]


def test_levelling_turned_off_decodes_the_batch_as_it_is(tiny_model: Path, tmp_path: Path) -> None:
    """level_batch=False (A3S_POWER_LEVEL_BATCH=0, TOML level_batch) levels nothing; the answers are the same."""
    from power.config import load_settings

    assert not load_settings({"A3S_POWER_HOME": str(tmp_path), "A3S_POWER_LEVEL_BATCH": "0"}).level_batch
    assert load_settings({"A3S_POWER_HOME": str(tmp_path)}).level_batch
    load = LoadOptions.from_options({"num_ctx": 512, "num_batch": 64}, num_parallel=4, level_batch=False)
    with Engine(str(tiny_model), load) as eng:
        _, follow = unequal_suffixes(eng)
        outs = [r.result() for r in eng.submit_many(follow, GREEDY)]
        assert eng.stats()["n_level_tokens"] == 0
        assert [o.tokens for o in outs] == [alone(tiny_model, p) for p in follow]
