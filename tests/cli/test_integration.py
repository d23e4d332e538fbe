"""The CLI as a subprocess (``python -m power ...``) against the real server, and with none running."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from power.cli.private import PrivateServer, free_port
from power.client import Client
from power.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
_NEEDED = ("power.server.serve", "power.server.app", "power.runner")
_missing = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"server modules absent: {_missing}")

MODELFILE = 'FROM ./tiny.gguf\nPARAMETER num_predict 12\nPARAMETER seed 7\nSYSTEM """Be tiny."""\n'


def _env(home: Path, port: int) -> dict[str, str]:
    return {**os.environ, "A3S_POWER_HOME": str(home), "OLLAMA_MODELS": str(home / "models"),
            "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_CONTEXT_LENGTH": "512", "PYTHONPATH": str(ROOT)}


def power(env: dict[str, str], *argv: str, stdin: str | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "power", *argv], env=env, cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tinymodels import write_llama

    folder = tmp_path_factory.mktemp("src")
    write_llama(folder / "tiny.gguf")
    (folder / "Modelfile").write_text(MODELFILE)
    return folder / "Modelfile"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``a3s-power serve`` on a free loopback port; yields the environment that reaches it."""
    home = tmp_path_factory.mktemp("served")
    port = free_port()
    env = _env(home, port)
    with serving(env, home / "serve.log"):
        yield env


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[None]:
    """Run ``a3s-power serve`` with ``env`` until the block ends, its output in ``log``."""
    with open(log, "wb") as sink:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen([sys.executable, "-m", "power", "serve"], env=env, cwd=ROOT,
                                stdout=sink, stderr=sink, start_new_session=True)
    client = Client(env["OLLAMA_HOST"] if "://" in env["OLLAMA_HOST"] else f"http://{env['OLLAMA_HOST']}")
    deadline = time.monotonic() + 60
    while not client.heartbeat(timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(log.read_text(errors="replace")[-2000:] or "serve did not start")
        time.sleep(0.2)
    # Stop it the way the CLI stops its private server: the whole process group.
    owner = PrivateServer(load_settings(env))
    owner.proc = proc
    try:
        yield
    finally:
        owner.stop()


def test_library_and_generation_through_the_server(served: dict[str, str], source: Path) -> None:
    r = power(served, "create", "tiny", "-f", str(source))
    assert r.returncode == 0, r.stderr
    assert "copying file " in r.stderr and "100%" in r.stderr and r.stderr.rstrip().endswith("success")

    r = power(served, "list")
    assert r.returncode == 0 and r.stdout.splitlines()[1].startswith("tiny:latest    ")

    r = power(served, "show", "tiny")
    assert "  Model\n    architecture        llama\n" in r.stdout and "num_predict" in r.stdout

    r = power(served, "run", "tiny", "hello", "--verbose", "--keepalive", "5m")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "eval count:           " in r.stderr and "total duration:       " in r.stderr

    r = power(served, "run", "tiny", "and more", stdin="piped text")
    assert r.returncode == 0 and r.stdout.strip()

    r = power(served, "ps")
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert rows and rows[0].startswith("tiny:latest") and "minutes from now" in rows[0]

    assert power(served, "stop", "tiny").returncode == 0
    r = power(served, "stop", "nothing-here")
    assert r.returncode != 0 and r.stderr == "Error: couldn't find model \"nothing-here\" to stop\n"

    assert power(served, "cp", "tiny", "tiny2").stdout == "copied 'tiny' to 'tiny2'\n"
    assert power(served, "rm", "tiny2").stdout == "deleted 'tiny2'\n"

    r = power(served, "run", "missing-model", "hi")
    assert r.returncode != 0 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr

    r = power(served, "-v")
    assert r.stdout.startswith("a3s-power version is ")


def test_run_shows_the_load_as_a_bar(served: dict[str, str], source: Path) -> None:
    assert power(served, "create", "loader", "-f", str(source)).returncode == 0
    r = power(served, "run", "loader", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "loading model" not in r.stdout  # the answer alone on stdout
    [bar] = [line for line in r.stderr.splitlines() if line.startswith("loading model:")]
    assert bar.startswith("loading model: 100% ▕█") and bar.endswith("B")
    again = power(served, "run", "loader", "hello")  # loaded now: no bar
    assert again.returncode == 0 and "loading model" not in again.stderr
    assert power(served, "stop", "loader").returncode == 0


def test_the_repl_shows_its_preload_as_a_bar(served: dict[str, str], source: Path) -> None:
    import io

    from power.cli.context import Context
    from power.cli.repl import Repl
    from power.cli.run import RunOptions

    assert power(served, "create", "chatter", "-f", str(source)).returncode == 0
    client = Client(f"http://{served['OLLAMA_HOST']}")
    err = io.StringIO()
    ctx = Context(settings=load_settings(served), out=io.StringIO(), err=err, stdin=io.StringIO())

    def read(prompt: str) -> str:
        raise EOFError

    repl = Repl(ctx, client, RunOptions(model="chatter", wordwrap=False), client.show("chatter"), read=read)
    assert repl.loop() == 0
    [bar] = [line for line in err.getvalue().splitlines() if line.startswith("loading model:")]
    assert bar.startswith("loading model: 100% ▕█")
    assert "chatter:latest" in [m["name"] for m in client.ps()]
    assert power(served, "stop", "chatter").returncode == 0


def test_show_modelfile_into_create_gives_the_same_model(served: dict[str, str], tmp_path: Path) -> None:
    from tests.tinymodels import CHATML_TOOLS_TEMPLATE, write_llama

    write_llama(tmp_path / "jinja.gguf", chat_template=CHATML_TOOLS_TEMPLATE)
    (tmp_path / "Modelfile").write_text("FROM ./jinja.gguf\nPARAMETER num_predict 4\n")
    assert power(served, "create", "jinja", "-f", str(tmp_path / "Modelfile")).returncode == 0
    shown = power(served, "show", "jinja", "--modelfile")
    assert shown.returncode == 0 and "{{ .Prompt }}" not in shown.stdout
    assert "{%- for message in messages %}" in shown.stdout
    (tmp_path / "Copied").write_text(shown.stdout)
    r = power(served, "create", "jinja-copy", "-f", str(tmp_path / "Copied"))
    assert r.returncode == 0, r.stderr
    client = Client(f"http://{served['OLLAMA_HOST']}")
    assert client.show("jinja-copy")["template"] == client.show("jinja")["template"] == CHATML_TOOLS_TEMPLATE
    ids = {line.split()[0]: line.split()[1] for line in power(served, "list").stdout.splitlines()[1:]}
    assert ids["jinja-copy:latest"] == ids["jinja:latest"]  # the very same manifest
    assert power(served, "show", "jinja-copy", "--modelfile").stdout.replace("jinja-copy", "jinja") == shown.stdout


def test_run_starts_a_private_server_when_none_answers(tmp_path: Path, source: Path) -> None:
    env = _env(tmp_path / "home", free_port())
    assert power(env, "create", "tiny", "-f", str(source)).returncode == 0
    assert power(env, "ps").returncode != 0  # nothing is serving
    r = power(env, "run", "tiny", "hello", "--verbose")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "eval count:" in r.stderr
    r = power(env, "ps")
    assert r.returncode != 0 and "could not connect" in r.stderr  # the private server is gone


def test_vision_model_from_a_modelfile_and_run_with_an_image_path(served: dict[str, str],
                                                                  tmp_path: Path) -> None:
    from tests.tinymodels import png, write_llama, write_mmproj

    write_llama(tmp_path / "text.gguf")
    write_mmproj(tmp_path / "mmproj.gguf", n_embd_text=64)
    (tmp_path / "Modelfile").write_text("FROM ./text.gguf\nFROM ./mmproj.gguf\nPARAMETER num_predict 4\n")
    (tmp_path / "my picture.png").write_bytes(png(20, 20, (9, 99, 199)))
    r = power(served, "create", "seer", "-f", str(tmp_path / "Modelfile"))
    assert r.returncode == 0, r.stderr
    assert "Projector" in power(served, "show", "seer").stdout

    picture = str(tmp_path / "my picture.png").replace(" ", "\\ ")
    r = power(served, "run", "seer", f"what colour is {picture} ?", "--verbose")
    assert r.returncode == 0, r.stderr
    assert f"Added image '{tmp_path / 'my picture.png'}'" in r.stderr and r.stdout.strip()
    seen = int(r.stderr.split("prompt eval count:")[1].split()[0])
    r = power(served, "run", "seer", "what colour is ?", "--verbose")
    assert seen - int(r.stderr.split("prompt eval count:")[1].split()[0]) >= 3  # the image's tokens

    r = power(served, "run", "tiny", f"and {picture}?")  # a model without vision keeps the path as text
    assert r.returncode == 0 and "Added image" not in r.stderr
