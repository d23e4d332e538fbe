"""The prompt cache beyond one sequence: prefixes shared across sequences, prompt states kept in host memory."""

from __future__ import annotations

import time
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


def test_a_restored_state_moves_back_into_its_sequence(tiny_model: Path) -> None:
    """A state restored from host memory leaves it: when the conversation goes on from inside it (a new answer
    to the same first turn), host memory then holds the newer state only, not the same prefix twice."""
    with Engine(str(tiny_model), LoadOptions(num_ctx=512, num_parallel=1), cache_ram=64 << 20) as eng:
        turn1 = conversation(eng, "rivers")
        eng.submit(turn1, GREEDY).result()
        eng.submit(conversation(eng, "deserts"), GREEDY).result()  # rivers goes to host memory
        assert eng.stats()["ram_entries"] == 1
        retry = turn1 + tokens(eng, " user: say it another way.")
        before = eng.stats()
        again = eng.submit(retry, GREEDY).result()  # restores rivers' first turn (deserts goes to host memory)
        assert delta(eng, before, "ram_hits") == (1,) and again.cached_tokens == len(turn1)
        assert eng.stats()["ram_entries"] == 1  # deserts; rivers' state is in the sequence now
        eng.submit(conversation(eng, "volcanoes"), GREEDY).result()
        st = eng.stats()
        assert st["ram_entries"] == 2 and st["ram_saves"] == 3  # deserts, and rivers as the retry left it
        later = retry + list(again.tokens) + tokens(eng, " user: thanks.")
        before = eng.stats()
        last = eng.submit(later, GREEDY).result()
        assert delta(eng, before, "ram_hits") == (1,) and last.cached_tokens == len(retry) + len(again.tokens) - 1
    assert last.tokens == alone(tiny_model, later)


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


def test_a_prefix_with_an_m_rope_image_is_shared_and_restored(tmp_path: Path) -> None:
    # M-RoPE: the image's 8 cells advance positions by 4, so copied and restored cells must keep their positions
    from tests.tinymodels import png
    from tests.tinyqwen2vl import write_qwen2vl_mmproj, write_qwen2vl_text

    model = write_qwen2vl_text(tmp_path / "text.gguf", seed=1)
    mmproj = write_qwen2vl_mmproj(tmp_path / "mmproj.gguf", n_embd_text=64)
    tall = png(56, 112, (220, 20, 20))
    text = "[img-0] describe this picture with care, every part of it, for a reader who cannot see it."
    prompts = [text + " first", text + " then"]

    def fresh(prompt: str) -> tuple[int, ...]:
        with Engine(str(model), LoadOptions(num_ctx=256, num_parallel=1), projector=str(mmproj)) as eng:
            return eng.submit(prompt, GREEDY, images=[tall]).result().tokens

    load = LoadOptions(num_ctx=256, num_parallel=2, num_batch=64)
    with Engine(str(model), load, projector=str(mmproj), cache_ram=16 << 20) as eng:
        running = eng.submit(prompts[0], {"temperature": 0, "num_predict": 200}, images=[tall])
        head = next(iter(running))
        before = eng.stats()
        shared = eng.submit(prompts[1], GREEDY, images=[tall]).result()
        running.cancel()
        assert running.result().done_reason == "cancel" and head.tokens
        assert delta(eng, before, "kv_copies") == (1,)
        assert shared.cached_tokens > 8 and shared.evaluated <= len(eng.tokenize(" then", add_special=False)) + 1
        assert shared.tokens == fresh(prompts[1])
        for topic in ("apples", "bridges"):  # both sequences go to other prompts
            eng.submit(conversation(eng, topic), GREEDY).result()
        before = eng.stats()
        again = eng.submit(prompts[1], GREEDY, images=[tall]).result()
        assert delta(eng, before, "ram_hits") == (1,) and again.evaluated == 1
        assert again.tokens == shared.tokens


def test_disk_tier_keeps_a_conversation_across_an_engine_restart(tiny_model: Path, tmp_path: Path) -> None:
    disk = (str(tmp_path / "states"), 64 << 20)
    load = LoadOptions(num_ctx=512, num_parallel=2)
    with Engine(str(tiny_model), load, cache_ram=64 << 20, cache_disk=disk) as eng:
        turn1 = conversation(eng, "harbours")
        answer = eng.submit(turn1, GREEDY).result()
        eng.submit(conversation(eng, "lanterns"), GREEDY).result()
        turn2 = turn1 + list(answer.tokens) + tokens(eng, " user: and at night?")
    files = list((tmp_path / "states").glob("*/*.pwkv"))
    assert len(files) == 2  # each sequence's cells
    with Engine(str(tiny_model), load, cache_ram=64 << 20, cache_disk=disk) as eng:
        assert eng.stats()["disk_loaded"] == 2
        second = eng.submit(turn2, GREEDY).result()
        assert second.cached_tokens == len(turn1) + len(answer.tokens) - 1
        st = eng.stats()
        assert st["disk_hits"] == 1 and st["disk_restored_tokens"] == second.cached_tokens
    assert second.tokens == alone(tiny_model, turn2)


def test_running_streams_go_on_while_a_restore_reads_its_file(tiny_model: Path, tmp_path: Path) -> None:
    """A restore's file is read off the engine's thread: while the read is held back, the other sequence
    keeps generating and the restoring one waits; released, it restores and answers as if never evicted."""
    disk = (str(tmp_path / "states"), 64 << 20)
    load = LoadOptions(num_ctx=512, num_parallel=2)
    with Engine(str(tiny_model), load, cache_ram=64 << 20, cache_disk=disk) as eng:
        turn1 = conversation(eng, "harbours")
        answer = eng.submit(turn1, GREEDY).result()
        turn2 = turn1 + list(answer.tokens) + tokens(eng, " user: and at night?")
    with Engine(str(tiny_model), load, cache_ram=64 << 20, cache_disk=disk) as eng:
        ctx = eng._ctx
        assert ctx is not None and eng.stats()["disk_loaded"] == 1
        running = iter(eng.submit(conversation(eng, "lanterns"), {"temperature": 0, "num_predict": 200}))
        got = len(next(running).tokens)
        ctx.cache_hold(True)
        restoring = eng.submit(turn2, GREEDY)
        while eng.stats()["disk_loading"] == 0:  # its sequence now waits for the read
            got += len(next(running).tokens)
        before = eng.stats()
        while eng.stats()["n_gen_tokens"] - before["n_gen_tokens"] < 10:  # the other stream goes on meanwhile
            got += len(next(running).tokens)
        during = eng.stats()
        assert during["disk_loading"] == 1 and got < 200
        assert during["disk_hits"] == before["disk_hits"] == 0  # nothing restored yet
        ctx.cache_hold(False)
        second = restoring.result()
        after = eng.stats()
        assert after["disk_loading"] == 0 and after["disk_hits"] == 1
        assert second.cached_tokens == len(turn1) + len(answer.tokens) - 1
        assert after["disk_restored_tokens"] == second.cached_tokens
        for _ in running:  # and it ends as it would have
            pass
    assert second.tokens == alone(tiny_model, turn2)


def test_requests_needing_one_file_read_it_once(tiny_model: Path, tmp_path: Path) -> None:
    """Two requests whose prompts a disk-tier file begins: one reads and restores it, the other waits for that
    sequence and copies its cells."""
    disk = (str(tmp_path / "states"), 64 << 20)
    load = LoadOptions(num_ctx=512, num_parallel=2)
    with Engine(str(tiny_model), load, cache_ram=64 << 20, cache_disk=disk) as eng:
        turn1 = conversation(eng, "harbours")
        answer = eng.submit(turn1, GREEDY).result()
        history = turn1 + list(answer.tokens)
        prompts = [history + tokens(eng, q) for q in (" user: and at night?", " user: and in winter?")]
    with Engine(str(tiny_model), load, cache_ram=64 << 20, cache_disk=disk) as eng:
        ctx = eng._ctx
        assert ctx is not None
        ctx.cache_hold(True)
        reqs = eng.submit_many(prompts, GREEDY)
        deadline = time.monotonic() + 30
        while (st := eng.stats())["kv_waits"] == 0:
            assert time.monotonic() < deadline, st
            time.sleep(0.01)
        assert st["disk_loading"] == 1  # one sequence reads the file, the other waits for it
        ctx.cache_hold(False)
        results = [r.result() for r in reqs]
        st = eng.stats()
        assert st["disk_hits"] == 1 and st["kv_copies"] == 1 and st["kv_waits"] == 1
        assert [r.cached_tokens for r in results] == [len(history) - 1] * 2
    assert [r.tokens for r in results] == [alone(tiny_model, p) for p in prompts]


def test_disk_tier_refuses_states_of_another_model_build_or_a_damaged_file(tiny_model: Path, eos_model: Path,
                                                                           tmp_path: Path) -> None:
    from power import native

    load = LoadOptions(num_ctx=512, num_parallel=1)
    folder = tmp_path / "states"
    prompts = ("tides are what we talk about for a while.", "comets are what we talk about for a while.")

    def fill() -> list[Path]:
        with Engine(str(tiny_model), load, cache_ram=64 << 20) as eng:
            ctx = eng._ctx
            assert ctx is not None
            ctx.cache_open(folder, "model-a|commit-1", 64 << 20)
            for p in prompts:
                eng.submit(p, GREEDY).result()
            assert ctx.cache_save() == 2
        return sorted(folder.glob("*.pwkv"), key=lambda f: f.stat().st_mtime_ns)

    def open_with(model: Path, key: str, prompt: str | None = None) -> tuple[int, dict[str, int]]:
        with Engine(str(model), load, cache_ram=64 << 20) as eng:
            ctx = eng._ctx
            assert ctx is not None
            found = ctx.cache_open(folder, key, 64 << 20)
            if prompt is not None:
                eng.submit(prompt, GREEDY).result()
            return found, eng.stats()

    assert len(fill()) == 2
    assert open_with(tiny_model, "model-a|commit-2")[0] == 0  # another llama.cpp commit
    assert list(folder.glob("*.pwkv")) == []  # and the files are gone
    fill()
    assert open_with(eos_model, "model-b|commit-1")[0] == 0  # another model
    tides, comets = fill()
    tides.write_bytes(tides.read_bytes()[:-100])  # truncated: its length says so
    raw = bytearray(comets.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte of its state flipped: only its checksum says so, when it is read
    comets.write_bytes(bytes(raw))
    found, st = open_with(tiny_model, "model-a|commit-1", prompts[1])
    assert found == 1 and not tides.exists()
    assert st["disk_hits"] == 0 and st["disk_misses"] == 1 and st["disk_entries"] == 0 and not comets.exists()
    fill()
    found, st = open_with(tiny_model, "model-a|commit-1", prompts[1])  # intact files of the same key load
    assert found == 2 and st["disk_hits"] == 1
    # the engine's own key names the weights and the llama.cpp commit
    from power.engine.statefiles import state_key
    assert native.llama_commit() in state_key(str(tiny_model), [], None, 512, load)
    assert state_key(str(tiny_model), [], None, 512, load) != state_key(str(eos_model), [], None, 512, load)


def written(eng: Engine, n: int) -> dict[str, int]:
    """The engine's counters once its disk tier's writer has written `n` states."""
    deadline = time.monotonic() + 30
    while (st := eng.stats())["disk_saves"] < n:
        assert time.monotonic() < deadline, st
        time.sleep(0.01)
    return st


def one_state_bytes(model: Path, prompt: list[int]) -> int:
    with Engine(str(model), LoadOptions(num_ctx=512, num_parallel=1), cache_ram=64 << 20) as probe:
        probe.submit(prompt, GREEDY).result()
        probe.submit(conversation(probe, "anything else"), GREEDY).result()
        return probe.stats()["ram_bytes"]


@pytest.mark.parametrize("ram_states", [1, 0])
def test_a_conversation_evicted_from_ram_comes_back_from_disk(tiny_model: Path, tmp_path: Path,
                                                              ram_states: int) -> None:
    """Host memory holds one state (the older ones leave it for disk) or none (states go straight there)."""
    load = LoadOptions(num_ctx=512, num_parallel=1)
    with Engine(str(tiny_model), load) as probe:
        turn1 = conversation(probe, "rivers")
    ram = max(1, int(one_state_bytes(tiny_model, turn1) * 1.5 * ram_states))
    with Engine(str(tiny_model), load, cache_ram=ram, cache_disk=(str(tmp_path), 64 << 20)) as eng:
        answer = eng.submit(turn1, GREEDY).result()
        for topic in ("deserts", "volcanoes"):  # one sequence: rivers goes to host memory, then on to disk
            eng.submit(conversation(eng, topic), GREEDY).result()
        st = written(eng, 2 - ram_states)
        assert st["ram_entries"] == ram_states and st["ram_bytes"] <= ram
        assert st["ram_evictions"] == ram_states and st["disk_entries"] == 2 - ram_states
        assert 0 < st["disk_bytes"] == sum(f.stat().st_size for f in tmp_path.glob("*/*.pwkv"))
        turn2 = turn1 + list(answer.tokens) + tokens(eng, " user: and what about their sources?")
        before = eng.stats()
        second = eng.submit(turn2, GREEDY).result()
        assert second.evaluated == len(turn2) - len(turn1) - len(answer.tokens) + 1
        hits, restored, ram_hits = delta(eng, before, "disk_hits", "disk_restored_tokens", "ram_hits")
        assert hits == 1 and restored == second.cached_tokens and ram_hits == 0
        assert second.tokens == alone(tiny_model, turn2)


def test_disk_tier_keeps_its_bound_dropping_the_oldest_first(tiny_model: Path, tmp_path: Path) -> None:
    topics = ("apples", "bridges", "castles", "dragons")
    load = LoadOptions(num_ctx=512, num_parallel=1)
    with Engine(str(tiny_model), load) as probe:
        prompts = {t: conversation(probe, t)[:40] for t in topics}
    one = one_state_bytes(tiny_model, prompts["apples"])
    budget = int(one * 2.5)  # room for two files
    with Engine(str(tiny_model), load, cache_ram=1, cache_disk=(str(tmp_path), budget)) as eng:
        for t in topics:  # one sequence, no room in host memory: each prompt pushes the one before to disk
            eng.submit(prompts[t], GREEDY).result()
        st = written(eng, 3)
        assert st["disk_evictions"] == 1 and st["disk_entries"] == 2 and st["disk_bytes"] <= budget
        assert len(list(tmp_path.glob("*/*.pwkv"))) == 2
        # apples, written first, went first; castles stayed (writing dragons now drops bridges)
        assert eng.submit(prompts["apples"], GREEDY).result().evaluated == len(prompts["apples"]) - 1
        written(eng, 4)
        assert eng.submit(prompts["castles"], GREEDY).result().evaluated == 1
        assert eng.submit(prompts["bridges"], GREEDY).result().evaluated == len(prompts["bridges"]) - 1
        assert eng.stats()["disk_bytes"] <= budget
    # closing wrote bridges, the newest file; the next engine, with room for one, keeps only that one
    with Engine(str(tiny_model), load, cache_ram=1, cache_disk=(str(tmp_path), int(one * 1.2))) as eng:
        st = eng.stats()
        assert st["disk_loaded"] == 1 and st["disk_evictions"] == 1
        assert len(list(tmp_path.glob("*/*.pwkv"))) == 1
        assert eng.submit(prompts["bridges"], GREEDY).result().evaluated == 1
