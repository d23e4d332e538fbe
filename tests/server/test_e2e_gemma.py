"""End to end on a real model: real gunicorn and runners, Gemma 3 270M, the official ollama and openai clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from power.store import ModelStore
from tests.server.conftest import add_model
from tests.server.test_e2e import gunicorn

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.realmodels import gemma3_270m

    home = tmp_path_factory.mktemp("gemma-home")
    add_model(ModelStore(home / "models", noprune=True), "gemma3:270m", gemma3_270m())
    with gunicorn(home, OLLAMA_CONTEXT_LENGTH="2048", OLLAMA_NUM_PARALLEL="2") as url:
        yield url


def test_ollama_client_generates_and_streams(server: str) -> None:
    client = ollama.Client(host=server)
    assert "gemma3:270m" in [m.model for m in client.list().models]
    info = client.show("gemma3:270m")
    assert info.modelinfo["general.architecture"] == "gemma3"
    out = client.generate(model="gemma3:270m", prompt="The capital of France is",
                          options={"temperature": 0, "num_predict": 12})
    assert out.done and out.eval_count == 12 and out.response.strip()
    assert out.load_duration and out.prompt_eval_count and out.eval_duration
    pieces = list(client.generate(model="gemma3:270m", prompt="The capital of France is", stream=True,
                                  options={"temperature": 0, "num_predict": 12}))
    assert "".join(p.response for p in pieces) == out.response
    assert pieces[-1].done and pieces[-1].done_reason == "length" and pieces[-1].context
    chat = client.chat(model="gemma3:270m", messages=[{"role": "user", "content": "Say hello."}],
                       options={"num_predict": 16})
    assert chat.message.role == "assistant" and chat.done


def test_openai_client_streams_with_usage(server: str) -> None:
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    done = client.chat.completions.create(model="gemma3:270m", max_tokens=16, temperature=0,
                                          messages=[{"role": "user", "content": "Name a colour."}])
    assert done.choices[0].message.content and done.usage.completion_tokens <= 16
    chunks = list(client.chat.completions.create(model="gemma3:270m", max_tokens=16, temperature=0, stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "Name a colour."}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == done.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == done.usage.completion_tokens
