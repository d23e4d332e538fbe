from __future__ import annotations

from pathlib import Path

import pytest

from power.config import load_settings
from power.store import ModelStore
from tests.tinymodels import write_llama


@pytest.fixture
def store() -> ModelStore:
    """A store in the models folder the autouse fixture points OLLAMA_MODELS at."""
    return ModelStore.from_settings(load_settings())


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def model_dir(tmp_path: Path, tiny_gguf: Path) -> Path:
    """A folder holding tiny.gguf, where test Modelfiles are written."""
    (tmp_path / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    return tmp_path

