"""The prompt cache through real runners: its host-memory bound in the estimate, its counters in /metrics."""

from __future__ import annotations

from collections.abc import Callable

from power.engine.options import LoadOptions
from power.runner import Scheduler
from power.runner.memory import ModelFacts, estimate, prompt_cache_bytes
from power.server.metrics import Metrics

GREEDY = {"temperature": 0, "num_predict": 8}


def test_prompt_cache_bound_from_the_setting_or_free_memory() -> None:
    assert prompt_cache_bytes(0, 64 << 30) == 0
    assert prompt_cache_bytes(100, 1 << 30) == 100 << 20
    assert prompt_cache_bytes(-1, 16 << 30) == 2 << 30  # an eighth of what is available
    assert prompt_cache_bytes(-1, 512 << 30) == 8 << 30  # at most llama-server's default
    facts = ModelFacts(n_layer=2, n_head=4, n_head_kv=4, n_embd=64, key_length=16, value_length=16, n_vocab=300)
    est = estimate(facts, 1 << 20, LoadOptions(num_ctx=512), 64 << 20)
    assert est.prompt_cache == 64 << 20 and est.host == est.total + (64 << 20)
    assert estimate(ModelFacts(embedding=True), 1 << 20, LoadOptions(), 64 << 20).prompt_cache == 0


def test_the_disk_tiers_queue_is_in_the_estimate() -> None:
    """States waiting for the disk tier's writer are host memory too: up to 256 MiB (the engine waits past it)."""
    facts = ModelFacts(n_layer=2, n_head=4, n_head_kv=4, n_embd=64, key_length=16, value_length=16, n_vocab=300)
    load = LoadOptions(num_ctx=512)
    assert estimate(facts, 1 << 20, load, 64 << 20).disk_queue == 0  # no disk tier
    big = estimate(facts, 1 << 20, load, 64 << 20, 4 << 30)
    assert big.disk_queue == 256 << 20 and big.host == big.total + (64 << 20) + (256 << 20)
    assert estimate(facts, 1 << 20, load, 64 << 20, 32 << 20).disk_queue == 32 << 20  # a tier smaller than that
    assert estimate(ModelFacts(embedding=True), 1 << 20, LoadOptions(), 64 << 20, 4 << 30).disk_queue == 0


def test_a_conversation_comes_back_from_host_memory(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(cache_ram=64)  # MiB; two sequences (OLLAMA_NUM_PARALLEL=2)
    turn1 = "rivers are what we talk about today, in some detail, for a while. "
    first = sched.generate("tiny", turn1, options=GREEDY).result()
    for topic in ("deserts", "volcanoes", "glaciers"):  # its cells go to other prompts
        sched.generate("tiny", f"{topic} are what we talk about today, in some detail.", options=GREEDY).result()
    new_part = sched.tokenize("tiny", " and their sources?", add_special=False)
    tokens = sched.tokenize("tiny", turn1) + list(first["tokens"]) + new_part
    turn2 = sched.generate("tiny", tokens, options=GREEDY).result()
    assert turn2["cached_tokens"] == len(tokens) - len(new_part) - 1  # the last answer token was never decoded
    [row] = sched.stats()["models"]
    ram, kv = row["prompt_cache"]["ram"], row["prompt_cache"]["kv"]
    assert ram["hits"] == 1 and ram["restored_tokens"] == turn2["cached_tokens"]
    assert 0 < ram["bytes"] <= 64 << 20 and ram["entries"] >= 2 and ram["misses"] >= 4
    assert kv["entries"] == 2 and kv["bytes"] > 0
    [loaded] = sched._models.values()
    assert loaded.estimate.prompt_cache == 64 << 20
    text = Metrics(sched).render().decode()
    assert 'a3s_power_prompt_cache_hits_total{model="tiny",tier="ram"} 1.0' in text
    assert 'a3s_power_prompt_cache_entries{model="tiny",tier="kv"} 2.0' in text
    assert "a3s_power_prompt_cache_restored_tokens_total" in text and "a3s_power_prompt_cache_bytes" in text


def test_a_conversation_stays_warm_across_a_runner_restart(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(cache_ram=64, cache_disk=64)
    turn1 = "harbours are what we talk about today, in some detail, for a while. "
    first = sched.generate("tiny", turn1, options=GREEDY).result()
    new_part = sched.tokenize("tiny", " and at night?", add_special=False)
    tokens = sched.tokenize("tiny", turn1) + list(first["tokens"]) + new_part
    assert sched.unload("tiny")  # the runner ends and writes its prompt states
    assert list(sched.settings.prompt_cache_dir.glob("*/*.pwkv"))
    second = sched.generate("tiny", tokens, options=GREEDY).result()
    assert second["load_duration"] > 0  # a new runner
    [loaded] = sched._models.values()
    assert loaded.estimate.disk_queue == 64 << 20 and loaded.estimate.prompt_cache == 64 << 20
    assert second["cached_tokens"] == len(tokens) - len(new_part) - 1
    [row] = sched.stats()["models"]
    assert row["prompt_cache"]["disk"]["hits"] == 1
    assert row["prompt_cache"]["disk"]["restored_tokens"] == second["cached_tokens"]
    assert row["prompt_cache"]["disk"]["entries"] >= 1 and row["prompt_cache"]["disk"]["bytes"] > 0
    text = Metrics(sched).render().decode()
    assert 'a3s_power_prompt_cache_hits_total{model="tiny",tier="disk"} 1.0' in text
