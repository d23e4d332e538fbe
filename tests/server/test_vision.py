"""Images through the HTTP APIs, the real scheduler and runner, and a tiny vision model (text GGUF + mmproj)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.server.realapp import RealApp, real_app
from tests.tinymodels import CHATML_TOOLS_TEMPLATE, png, write_llama, write_mmproj

RED, BLUE = png(32, 32, (220, 20, 20)), png(32, 32, (20, 20, 220))
N_IMAGE_TOKENS = 4
OPTIONS = {"temperature": 0, "num_predict": 4}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApp]:
    home = tmp_path_factory.mktemp("vision-app")
    model = write_llama(home / "text.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    text_only = write_llama(home / "plain.gguf", seed=1, chat_template=CHATML_TOOLS_TEMPLATE)
    mmproj = write_mmproj(home / "mmproj.gguf", n_embd_text=64)
    yield from real_app(home, {"seer": model, "blind": text_only}, projectors={"seer": mmproj})


def _chat(real: RealApp, images: list[str] | None, model: str = "seer", **extra: object) -> object:
    msg: dict[str, object] = {"role": "user", "content": "what colour is this?"}
    if images is not None:
        msg["images"] = images
    return real.client.simulate_post("/api/chat", json={"model": model, "messages": [msg], "stream": False,
                                                        "options": OPTIONS, **extra})


def test_show_lists_vision_and_the_projector(real: RealApp) -> None:
    r = real.client.simulate_post("/api/show", json={"model": "seer"})
    assert r.status_code == 200
    assert "vision" in r.json["capabilities"]
    assert r.json["projector_info"]["general.architecture"] == "clip"
    blind = real.client.simulate_post("/api/show", json={"model": "blind"})
    assert "vision" not in blind.json["capabilities"]


def test_native_chat_with_an_image(real: RealApp) -> None:
    # One sequence: each request reuses the cached "<|im_start|>user\n" and evaluates the rest.
    assert _chat(real, [b64(RED)]).status_code == 200
    seen = _chat(real, [b64(BLUE)])
    plain = _chat(real, None)
    assert plain.status_code == 200 and seen.status_code == 200, seen.text
    # The image's tokens stand where "[img-0]" was (the text after it gains a leading space).
    assert N_IMAGE_TOKENS - 1 <= seen.json["prompt_eval_count"] - plain.json["prompt_eval_count"] <= N_IMAGE_TOKENS + 1
    assert seen.json["eval_count"] == 4 and seen.json["done_reason"] == "length"


def test_the_picture_changes_the_answer_distribution(real: RealApp) -> None:
    def top(image: bytes) -> list[tuple[str, float]]:
        r = real.client.simulate_post("/api/generate", json={
            "model": "seer", "prompt": "colour?", "images": [b64(image)], "stream": False,
            "logprobs": True, "top_logprobs": 5, "options": {"temperature": 0, "num_predict": 1}})
        assert r.status_code == 200, r.text
        return [(t["token"], t["logprob"]) for t in r.json["logprobs"][0]["top_logprobs"]]

    def close(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
        # a cached image is evaluated in other batch shapes: equal up to float rounding
        return [t for t, _ in a] == [t for t, _ in b] and all(abs(x - y) < 1e-3 for (_, x), (_, y) in zip(a, b))

    red = top(RED)
    assert not close(red, top(BLUE))
    assert close(red, top(RED))


def test_openai_image_url(real: RealApp) -> None:
    client = real.openai()
    out = client.chat.completions.create(model="seer", max_tokens=4, temperature=0, messages=[{
        "role": "user", "content": [
            {"type": "text", "text": "what colour is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(BLUE)}}]}])
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 4
    assert out.usage.prompt_tokens >= N_IMAGE_TOKENS


def test_streamed_chat_with_two_images(real: RealApp) -> None:
    r = real.client.simulate_post("/api/chat", json={
        "model": "seer", "stream": True, "options": OPTIONS,
        "messages": [{"role": "user", "content": "compare", "images": [b64(RED), b64(BLUE)]}]})
    assert r.status_code == 200
    lines = [line for line in r.text.splitlines() if line]
    assert '"done":true' in lines[-1].replace(" ", "")


@pytest.mark.parametrize("image, needle", [
    ("not base64 !!", "not valid base64"),
    (b64(b"just some text"), "not a PNG"),
    (b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "the image header is damaged"),
    (b64(png(8, 8)[:33] + b"\x00" * 20), "could not be decoded"),  # a sound header, then garbage
    (b64(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (60000).to_bytes(4, "big") * 2), "60000x60000 pixels"),
])
def test_bad_images_are_400_and_the_server_keeps_serving(real: RealApp, image: str, needle: str) -> None:
    r = _chat(real, [image])
    assert r.status_code == 400 and needle in r.json["error"]
    assert _chat(real, [b64(RED)]).status_code == 200


def test_a_model_without_projector_refuses_images(real: RealApp) -> None:
    r = _chat(real, [b64(RED)], model="blind")
    assert r.status_code == 400 and r.json["error"] == '"blind:latest" does not support vision'
