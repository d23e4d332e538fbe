from __future__ import annotations

from pathlib import Path

import pytest

from tests.tinymodels import write_llama


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama model that never ends on its own (use num_predict)."""
    return write_llama(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=1)


@pytest.fixture(scope="session")
def eos_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose first sampled token is always end-of-generation."""
    return write_llama(tmp_path_factory.mktemp("models") / "eos.gguf", seed=2, eos_bias=60.0)


@pytest.fixture(scope="session")
def embed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedding model (mean pooling declared in its metadata)."""
    return write_llama(tmp_path_factory.mktemp("models") / "embed.gguf", seed=3, pooling=1)


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    from power.engine import Engine, LoadOptions

    eng = Engine(str(tiny_model), LoadOptions(num_ctx=256, num_parallel=8, num_batch=128))
    yield eng
    eng.close()
