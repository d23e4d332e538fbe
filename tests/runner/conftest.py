"""Fixtures for runner and scheduler tests: tiny real models and a scheduler that is always closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from power.config import Settings, load_settings
from power.errors import ModelNotFound
from power.runner import ModelSpec, Scheduler
from tests.tinymodels import write_llama


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        # wide enough that a 512-token stream lasts long enough to be interrupted
        "tiny": write_llama(d / "tiny.gguf", seed=0, n_embd=256, n_layer=4, n_ff=1024, n_head=8, n_head_kv=4),
        "other": write_llama(d / "other.gguf", seed=1, name="other"),
        "third": write_llama(d / "third.gguf", seed=2, name="third"),
        "stopper": write_llama(d / "stopper.gguf", seed=3, eos_bias=60.0),
        "embed": write_llama(d / "embed.gguf", seed=4, pooling=1),
    }


@pytest.fixture
def resolve(models: dict[str, Path]) -> Callable[[str], ModelSpec]:
    def resolve(name: str) -> ModelSpec:
        base = name.split(":")[0]
        if base not in models:
            raise ModelNotFound(name)
        return ModelSpec(name=name, model_path=str(models[base]), digest="sha256:" + "0" * 64,
                         details={"format": "gguf", "family": "llama"})
    return resolve


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"A3S_POWER_HOME": str(tmp_path), "OLLAMA_NUM_PARALLEL": "2",
                          "OLLAMA_CONTEXT_LENGTH": "512", "OLLAMA_LOAD_TIMEOUT": "60"})


@pytest.fixture
def make_scheduler(settings: Settings, resolve: Callable[[str], ModelSpec]
                   ) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(**changes: Any) -> Scheduler:
        extra = changes.pop("kwargs", {})
        resolver = changes.pop("resolve", resolve)
        sched = Scheduler(settings.with_(**changes), resolver, gpus=[], **extra)
        made.append(sched)
        return sched

    yield make
    for s in made:
        s.close(deadline=2.0)
