from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from power.cli.context import Context
from power.cli.main import main
from power.cli.private import free_port
from power.config import load_settings
from tests.tinymodels import write_llama


@dataclass
class Result:
    code: int
    out: str
    err: str


class CLI:
    """Runs ``main`` in this process with captured streams and settings of its own."""

    def __init__(self, home: Path, port: int) -> None:
        self.env = {"A3S_POWER_HOME": str(home), "OLLAMA_MODELS": str(home / "models"),
                    "OLLAMA_HOST": f"127.0.0.1:{port}"}

    def __call__(self, *argv: str, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        ctx = Context(settings=load_settings(self.env), out=out, err=err, stdin=io.StringIO(stdin))
        code = main(list(argv), ctx)
        return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """A CLI whose OLLAMA_HOST points at a port nothing listens on."""
    return CLI(tmp_path / "home", free_port())


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def modelfile(tmp_path: Path, tiny_gguf: Path) -> Path:
    """A Modelfile next to a copy of the tiny GGUF, naming it by a relative path."""
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    path = folder / "Modelfile"
    path.write_text('FROM ./tiny.gguf\nPARAMETER temperature 0.5\nPARAMETER stop "<|eos|>"\n'
                    'SYSTEM """You are tiny.\nSecond line.\nThird line."""\nLICENSE MIT\n')
    return path
