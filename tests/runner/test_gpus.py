"""GPU detection from captured outputs (Metal, NVML, nvidia-smi), placement over fake GPUs, and the VRAM budget."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from power.config import Settings
from power.engine.options import LoadOptions
from power.runner import ModelSpec, OutOfMemory, Scheduler, detect_gpus
from power.runner.memory import (
    GPU,
    ModelFacts,
    detect_metal,
    estimate,
    fit_layers,
    model_facts,
    nvml_gpus,
    parse_memsize,
    Placement,
    place,
    processor_split,
    remote_share,
)
from tests.rpcservers import RpcServerProcess
from tests.server.live import free_port

GiB = 1 << 30
SMI = "0, NVIDIA A10, 23028, 22000\n"


def refuse(cmd: Sequence[str]) -> str:
    raise AssertionError(f"no command should run: {cmd}")


def test_metal_on_apple_silicon_from_sysctl() -> None:
    seen: list[list[str]] = []

    def run(cmd: Sequence[str]) -> str:
        seen.append(list(cmd))
        return "17179869184\n"

    gpus = detect_gpus(run, system="Darwin", machine="arm64")
    assert seen == [["sysctl", "-n", "hw.memsize"]]
    assert gpus == [GPU(0, "Apple Metal", 16 * GiB, 16 * GiB * 2 // 3, library="metal")]
    assert parse_memsize("hw.memsize: 68719476736") == 64 * GiB and parse_memsize("garbage") == 0
    assert detect_metal(lambda cmd: "hw.memsize: 68719476736\n")[0].free == 48 * GiB
    assert detect_gpus(refuse, system="Darwin", machine="x86_64") == []  # Intel Macs: no Metal offload

    def broken(cmd: Sequence[str]) -> str:
        raise OSError("sysctl: not found")

    assert detect_gpus(broken, system="Darwin", machine="arm64") == []
    assert detect_metal(lambda cmd: "") == []


def fake_nvml(fail_init: bool = False) -> Any:
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    return SimpleNamespace(
        calls=calls, nvmlInit=init, nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: [b"NVIDIA H100 80GB HBM3", "NVIDIA L4"][h],
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=(80 - 60 * h) * GiB, free=(70 - 60 * h) * GiB,
                                                          used=10 * GiB))


def test_nvml_is_used_when_importable_and_nvidia_smi_otherwise() -> None:
    nvml = fake_nvml()
    gpus = detect_gpus(refuse, nvml=nvml, system="Linux", machine="x86_64")
    assert gpus == [GPU(0, "NVIDIA H100 80GB HBM3", 80 * GiB, 70 * GiB), GPU(1, "NVIDIA L4", 20 * GiB, 10 * GiB)]
    assert nvml.calls == ["init", "shutdown"]
    dead = fake_nvml(fail_init=True)
    assert nvml_gpus(dead) is None
    assert detect_gpus(lambda cmd: SMI, nvml=dead, system="Linux") == [GPU(0, "NVIDIA A10", 23028 << 20,
                                                                           22000 << 20)]


def test_real_pynvml_answers_or_declines() -> None:
    pynvml = pytest.importorskip("pynvml")
    found = nvml_gpus(pynvml)
    assert found is None or all(g.total >= g.free >= 0 for g in found)


FACTS = ModelFacts(n_layer=31, n_embd=64, n_head=4, n_head_kv=4, key_length=16, value_length=16, n_vocab=100)
EST = estimate(FACTS, 6 * GiB, LoadOptions(num_ctx=256))


def two(free0: int, free1: int) -> list[GPU]:
    return [GPU(0, "a", 24 * GiB, free0), GPU(1, "b", 24 * GiB, free1)]


def test_placement_fits_the_fewest_gpus_unless_spread() -> None:
    load = LoadOptions(num_gpu=-1)
    assert place(EST, load, FACTS, two(8 * GiB, 12 * GiB)).per_gpu == ((0, EST.total),)  # main_gpu fits
    assert place(EST, LoadOptions(main_gpu=1), FACTS, two(12 * GiB, 8 * GiB)).per_gpu == ((1, EST.total),)
    one = place(EST, load, FACTS, two(4 * GiB, 12 * GiB))
    assert one.per_gpu == ((1, EST.total),) and one.short == 0  # else the roomiest GPU alone
    both = place(EST, load, FACTS, two(4 * GiB, 4 * GiB))
    assert [i for i, _ in both.per_gpu] == [0, 1] and both.vram == EST.total and both.short == 0
    spread = place(EST, load, FACTS, two(4 * GiB, 12 * GiB), spread=True)
    assert [i for i, _ in spread.per_gpu] == [0, 1] and spread.vram == EST.total
    assert abs(spread.per_gpu[0][1] * 3 - spread.per_gpu[1][1]) < 16  # in proportion to free memory
    assert place(EST, load, FACTS, two(GiB, GiB)).short == EST.total - 2 * GiB
    assert place(EST, LoadOptions(num_gpu=0), FACTS, two(GiB, GiB)).per_gpu == ()
    half = place(EST, LoadOptions(num_gpu=16), FACTS, two(8 * GiB, 8 * GiB))
    assert half.vram == EST.total // 2 and len(half.per_gpu) == 1


def test_placement_leaves_the_rpc_servers_share_off_the_local_gpus() -> None:
    load = LoadOptions(num_gpu=-1)
    remote = remote_share(EST, load, FACTS, 4 * GiB, 4 * GiB)
    assert remote == EST.total // 2
    with_rpc = replace(EST, remote=remote)
    one = place(with_rpc, load, FACTS, two(4 * GiB, 0))
    assert one.per_gpu == ((0, EST.total - remote),) and one.short == 0
    both = place(with_rpc, load, FACTS, two(2 * GiB, 2 * GiB), spread=True)
    assert both.vram == EST.total - remote and both.short == 0
    assert place(with_rpc, load, FACTS, two(GiB, 0)).short == EST.total - remote - GiB
    half = place(replace(EST, remote=EST.total // 4), LoadOptions(num_gpu=16), FACTS, two(8 * GiB, 8 * GiB))
    assert half.vram == EST.total // 2 - EST.total // 4
    # Every offloaded byte on the servers: nothing is placed here.
    assert place(replace(EST, remote=EST.total), load, FACTS, two(GiB, GiB)) == Placement()


def test_default_layers_fit_free_vram_and_ps_text() -> None:
    assert fit_layers(EST, FACTS, two(8 * GiB, 8 * GiB)) == -1
    layers = fit_layers(EST, FACTS, [GPU(0, "a", 4 * GiB, 3 * GiB)])
    assert 0 < layers < 32 and EST.total * layers // 32 <= 3 * GiB
    assert fit_layers(EST, FACTS, []) == 0
    # RPC servers' free memory counts beside the GPUs' (llama.cpp splits the offloaded layers over both).
    assert fit_layers(EST, FACTS, [GPU(0, "a", 4 * GiB, 3 * GiB)], 8 * GiB) == -1
    assert fit_layers(EST, FACTS, [], 8 * GiB) == -1
    assert fit_layers(EST, FACTS, [], 3 * GiB) == layers
    assert processor_split(100, 100, ((0, 50), (1, 50))) == "100% GPU (50%/50% GPU 0/1)"
    assert processor_split(100, 40, ((0, 10), (3, 30))) == "60%/40% CPU/GPU (25%/75% GPU 0/3)"
    assert processor_split(100, 100, ((0, 100),)) == "100% GPU"


@pytest.fixture
def gpu_scheduler(settings: Settings, resolve: Callable[[str], ModelSpec]) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(gpus: list[GPU], **changes: Any) -> Scheduler:
        sched = Scheduler(settings.with_(**changes), resolve, gpus=gpus, meminfo=lambda: (64 * GiB, 64 * GiB),
                          reserve=0)
        made.append(sched)
        return sched

    yield make
    for s in made:
        s.close(deadline=2.0)


def sizes(models: dict[str, Path], name: str, settings: Settings) -> int:
    facts = model_facts(models[name])
    load = LoadOptions(num_ctx=settings.context_length, num_parallel=settings.num_parallel)
    return estimate(facts, models[name].stat().st_size, load).total


def test_sched_spread_shows_in_ps(gpu_scheduler: Callable[..., Scheduler]) -> None:
    sched = gpu_scheduler(two(GiB, GiB), sched_spread=True)
    sched.load("tiny")
    (row,) = sched.ps()
    assert row["size_vram"] == row["size"] and row["processor"] == "100% GPU (50%/50% GPU 0/1)"


def test_vram_refuses_explicit_offload_and_evicts_idle_models(
        gpu_scheduler: Callable[..., Scheduler], models: dict[str, Path], settings: Settings) -> None:
    tiny, other = sizes(models, "tiny", settings), sizes(models, "other", settings)
    small = gpu_scheduler([GPU(0, "a", GiB, tiny // 2)])
    with pytest.raises(OutOfMemory, match="requires more GPU memory"):
        small.load("tiny", {"num_gpu": 99})
    assert small.ps() == []
    small.load("tiny")  # by default only the layers that fit are offloaded
    (row,) = small.ps()
    assert 0 < row["size_vram"] <= tiny // 2 and row["processor"].endswith("CPU/GPU")

    room_for_one = gpu_scheduler([GPU(0, "a", GiB, max(tiny, other) + (1 << 20))])
    room_for_one.load("tiny")
    room_for_one.load("other")
    assert [(r["name"], r["processor"]) for r in room_for_one.ps()] == [("other", "100% GPU")]


def test_a_model_split_over_a_local_gpu_and_an_rpc_server_counts_each_share_once(
        gpu_scheduler: Callable[..., Scheduler], models: dict[str, Path], settings: Settings,
        tmp_path: Path) -> None:
    tiny = sizes(models, "tiny", settings)
    # A real rpc-server that offers 48 MiB: llama.cpp gives it its share of the layers by free memory.
    server = RpcServerProcess(free_port(), tmp_path / "rpc.log", mem_mib=48)
    try:
        assert server.info.free == 48 << 20
        gpu_free = tiny // 2
        remote = min(48 << 20, tiny * (48 << 20) // ((48 << 20) + gpu_free))
        assert tiny - remote <= gpu_free < tiny  # the local share fits the GPU; the whole model would not
        sched = gpu_scheduler([GPU(0, "a", GiB, gpu_free)], rpc_servers=(server.endpoint,))
        sched.load("tiny", {"num_gpu": 99})
        (row,) = sched.ps()
        # Offloaded whole, its bytes counted once: the GPU holds the rest of what the server does not.
        assert row["size_vram"] == row["size"] and row["processor"] == "100% GPU", row
    finally:
        server.stop()


def test_default_layers_count_the_rpc_servers_free_memory_beside_the_local_gpus(
        gpu_scheduler: Callable[..., Scheduler], models: dict[str, Path], settings: Settings,
        tmp_path: Path) -> None:
    tiny = sizes(models, "tiny", settings)
    layers = model_facts(models["tiny"]).n_layer + 1
    offer = 64 << 20
    # A real rpc-server that reports 64 MiB free: with it, the default num_gpu counts the GPU's and its memory.
    server = RpcServerProcess(free_port(), tmp_path / "rpc.log", mem_mib=offer >> 20)
    try:
        assert server.info.free == offer
        # The GPU alone holds a third of the model, the GPU and the server all of it: every layer offloaded.
        gpu_free = 32 << 20
        assert gpu_free * layers // tiny < layers - 1 and gpu_free + offer >= tiny
        sched = gpu_scheduler([GPU(0, "a", GiB, gpu_free)], rpc_servers=(server.endpoint,))
        sched.load("tiny")
        (row,) = sched.ps()
        assert row["size"] == tiny and row["size_vram"] == tiny and row["processor"] == "100% GPU", row
        sched.close(deadline=2.0)  # the server serves one client at a time
        # Neither holds it whole: the layers both hold (3 of 5), where the GPU alone would take none.
        gpu_free = 8 << 20
        want = (gpu_free + offer) * layers // tiny
        assert gpu_free * layers // tiny == 0 and 0 < want < layers
        sched = gpu_scheduler([GPU(0, "a", GiB, gpu_free)], rpc_servers=(server.endpoint,))
        sched.load("tiny")
        (row,) = sched.ps()
        assert row["size_vram"] == tiny * want // layers, (row, want)
        # An explicit num_gpu still wins over the default.
        sched.load("tiny", {"num_gpu": 1})
        (row,) = sched.ps()
        assert row["size_vram"] == tiny // layers, row
    finally:
        server.stop()
