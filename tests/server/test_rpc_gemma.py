"""Gemma 3 270M split over two real ``a3s-power rpc-server`` processes and the local CPU, end to end.

Real gunicorn servers, real runners, real RPC servers on loopback, the official ollama client: the split
model answers greedily token for token as the local-only load does, and an RPC server killed mid-stream
ends that stream with an error line while the next request is served.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.store import ModelStore
from tests.rpcservers import RpcServerProcess, running_servers
from tests.server.conftest import add_model
from tests.server.live import LiveServer

ollama = pytest.importorskip("ollama")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "gemma3:270m"
PROMPT = "The three primary colours are"
GREEDY = {"temperature": 0, "num_predict": 32}
SPLIT = 12  # of Gemma 3 270M's 18 layers (+ output): these go to the two servers, the rest stay on the CPU


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.realmodels import gemma3_270m

    folder = tmp_path_factory.mktemp("rpc-gemma") / "models"
    add_model(ModelStore(folder, noprune=True), MODEL, gemma3_270m())
    return folder


@pytest.fixture
def rpc_servers(tmp_path: Path) -> Iterator[list[RpcServerProcess]]:
    yield from running_servers(tmp_path)


@pytest.fixture
def serve(tmp_path: Path, models: Path) -> Iterator[Any]:
    """Start a real server over the shared models folder, with extra settings; stopped at the end."""
    started: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        home = tmp_path / f"home{len(started)}"
        home.mkdir()
        started.append(LiveServer(home, {"OLLAMA_MODELS": str(models), "OLLAMA_NUM_PARALLEL": "1", **env}))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def generate(server: LiveServer, **options: Any) -> Any:
    return ollama.Client(host=server.url).generate(model=MODEL, prompt=PROMPT, options={**GREEDY, **options})


def test_split_over_two_servers_and_the_cpu_is_token_for_token_the_local_output(
        serve: Any, rpc_servers: list[RpcServerProcess]) -> None:
    local = serve()
    want = generate(local)
    [local_row] = ollama.Client(host=local.url).ps().models
    local.stop()
    assert want.eval_count == 32 and local_row.size_vram == 0

    split = serve(A3S_POWER_RPC_SERVERS=",".join(s.endpoint for s in rpc_servers))
    got = generate(split, num_gpu=SPLIT)
    # `context` is the prompt's and the answer's token ids: equal lists are equal tokens, one by one.
    assert got.context == want.context and got.response == want.response
    [row] = ollama.Client(host=split.url).ps().models
    assert 0 < row.size_vram < row.size, row  # part remote, part here


def test_an_rpc_server_killed_mid_stream_ends_that_stream_with_an_error_line_and_the_next_request_is_served(
        serve: Any, rpc_servers: list[RpcServerProcess]) -> None:
    server = serve(A3S_POWER_RPC_SERVERS=",".join(s.endpoint for s in rpc_servers))
    lines = []
    t0 = 0.0
    for line in server.stream_lines("/api/generate", {"model": MODEL, "prompt": PROMPT,
                                                      "options": {"temperature": 0, "num_predict": 1500,
                                                                  "num_gpu": SPLIT}}):
        lines.append(line)
        if len(lines) == 3:
            rpc_servers[1].kill()
            t0 = time.monotonic()
    assert time.monotonic() - t0 < 60
    assert len(lines) > 3 and all("response" in line and not line["done"] for line in lines[:-1])
    assert set(lines[-1]) == {"error"} and lines[-1]["error"], lines[-1]
    # The next request loads the model again without the dead server (it fits here) and is answered in full.
    again = generate(server, num_gpu=SPLIT)
    assert again.done and again.done_reason == "length" and again.eval_count == 32
    log = server.log.read_text()
    assert "unreachable RPC servers" in log and rpc_servers[1].endpoint in log
