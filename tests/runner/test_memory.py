from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from power.engine.options import LoadOptions
from power.runner import OutOfMemory, Scheduler, detect_gpus, parse_nvidia_smi
from power.runner.memory import GPU, estimate, model_facts, processor_split, read_meminfo, vram_share

SMI = """0, NVIDIA H100 80GB HBM3, 81559, 80847
1, NVIDIA H100 80GB HBM3, 81559, 1024
garbage line
"""


def test_parse_nvidia_smi() -> None:
    gpus = parse_nvidia_smi(SMI)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].total == 81559 << 20 and gpus[1].free == 1 << 30


def test_detect_gpus_through_a_fake_nvidia_smi() -> None:
    seen: list[list[str]] = []

    def run(cmd: list[str]) -> str:
        seen.append(list(cmd))
        return SMI

    assert len(detect_gpus(run)) == 2 and "--format=csv,noheader,nounits" in seen[0]

    def broken(cmd: list[str]) -> str:
        raise OSError("no driver")

    assert detect_gpus(broken) == []


def test_read_meminfo(tmp_path: Path) -> None:
    p = tmp_path / "meminfo"
    p.write_text("MemTotal:       24684096 kB\nMemFree:  1 kB\nMemAvailable:   24131836 kB\n")
    assert read_meminfo(str(p)) == (24684096 * 1024, 24131836 * 1024)
    assert read_meminfo(str(tmp_path / "missing")) == (0, 0)


def test_estimate_grows_with_context_and_parallelism(models: dict[str, Path]) -> None:
    facts = model_facts(models["other"])
    assert facts.n_layer == 2 and facts.n_head_kv == 2 and facts.key_length == 16 and not facts.embedding
    small = estimate(facts, 1000, LoadOptions(num_ctx=512))
    assert small.kv_cache == 2 * 2 * (16 + 16) * 2 * 512
    assert estimate(facts, 1000, LoadOptions(num_ctx=512, num_parallel=4)).kv_cache == 4 * small.kv_cache
    assert estimate(facts, 1000, LoadOptions(num_ctx=512, kv_cache_type="q8_0")).kv_cache < small.kv_cache
    assert model_facts(models["embed"]).embedding
    assert model_facts(Path("/nonexistent.gguf")).n_layer == 0


def test_a_draft_models_kv_cache_and_buffers_are_counted(models: dict[str, Path]) -> None:
    """The draft runs beside the model with the same sequences and contexts: its cache and buffers add up."""
    alone = model_facts(models["other"])
    both = model_facts(models["other"], models["other"])
    assert both.draft == alone and alone.draft is None
    load = LoadOptions(num_ctx=512, num_parallel=2)
    one, two = estimate(alone, 1000, load), estimate(both, 2000, load)
    assert two.kv_cache == 2 * one.kv_cache and two.compute - one.compute == one.compute - (64 << 20)
    assert two.total == one.total + 1000 + one.kv_cache + one.compute - (64 << 20)


def test_processor_split_and_vram(models: dict[str, Path]) -> None:
    assert processor_split(100, 0) == "100% CPU"
    assert processor_split(100, 100) == "100% GPU"
    assert processor_split(100, 52) == "48%/52% CPU/GPU"
    facts = model_facts(models["other"])
    est = estimate(facts, 3000, LoadOptions())
    gpu = [GPU(0, "x", 1 << 34, 1 << 34)]
    assert vram_share(est, LoadOptions(num_gpu=-1), facts, gpu) == est.total
    assert vram_share(est, LoadOptions(num_gpu=0), facts, gpu) == 0
    assert vram_share(est, LoadOptions(num_gpu=1), facts, gpu) == est.total // 3
    assert vram_share(est, LoadOptions(num_gpu=-1), facts, []) == 0


def test_a_model_that_cannot_fit_is_refused(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(kwargs={"meminfo": lambda: (32 << 20, 32 << 20), "reserve": 0})
    with pytest.raises(OutOfMemory, match="requires more system memory"):
        sched.load("tiny")
    assert sched.ps() == []


def test_idle_models_are_evicted_to_make_room(make_scheduler: Callable[..., Scheduler]) -> None:
    # Room for one tiny model (about 66 MiB estimated) but not two.
    sched = make_scheduler(kwargs={"meminfo": lambda: (100 << 20, 100 << 20), "reserve": 0})
    sched.load("tiny")
    sched.load("other")
    assert [r["name"] for r in sched.ps()] == ["other"]
