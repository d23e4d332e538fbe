from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point A3S_POWER_HOME and OLLAMA_MODELS at fresh temporary folders for every test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("A3S_POWER_HOME", str(home))
    monkeypatch.setenv("OLLAMA_MODELS", str(home / "models"))
