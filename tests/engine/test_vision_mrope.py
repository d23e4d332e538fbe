"""Images with M-RoPE: a tiny Qwen2-VL pair in the real engine.

An M-RoPE image of nx x ny merged patches fills nx * ny KV cells but advances positions by max(nx, ny), so
a sequence's next position is not its number of cells. These tests hold the shim to that: after an image,
after an image reused from the cache, and with several sequences at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from power import native
from power.engine import Chunk, Engine, LoadOptions
from tests.tinymodels import png
from tests.tinyqwen2vl import VISION_TOKENS, write_qwen2vl_mmproj, write_qwen2vl_text

# 56x112 pixels in 14x14 patches merged 2x2: 2 wide, 4 high = 8 cells over 4 positions; 112x56 the other way.
TALL, WIDE = png(56, 112, (220, 20, 20)), png(112, 56, (20, 20, 220))
N_IMAGE_TOKENS = 8
GREEDY = {"temperature": 0, "num_predict": 6}
ONE = {"temperature": 0, "num_predict": 1}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("qwen2vl")
    return write_qwen2vl_text(d / "text.gguf", seed=1), write_qwen2vl_mmproj(d / "mmproj.gguf", n_embd_text=64)


@pytest.fixture(scope="module")
def vision(files: tuple[Path, Path]):
    model, mmproj = files
    eng = Engine(str(model), LoadOptions(num_ctx=256, num_parallel=4, num_batch=128), projector=str(mmproj))
    yield eng
    eng.close()


def fresh(eng: Engine, prompt: str, options: dict[str, Any], images: list[bytes]) -> Chunk:
    """Evaluate a prompt with nothing cached."""
    eng.clear_cache()
    return eng.submit(prompt, options, images=images, logprobs=5).result()


def same_first_token_distribution(a: Chunk, b: Chunk) -> bool:
    ta, tb = a.logprobs[0].top, b.logprobs[0].top
    return [t for t, _, _ in ta] == [t for t, _, _ in tb] and \
        all(abs(x - y) < 1e-3 for (_, x, _), (_, y, _) in zip(ta, tb))


def test_the_projector_reports_mrope(vision: Engine) -> None:
    assert vision.projector is not None
    info = vision.projector.info
    assert info.vision and info.mrope and not info.non_causal and info.n_embd == 64


@pytest.mark.parametrize("image, n_tokens", [
    (TALL, 8), (WIDE, 8), (png(112, 112, (9, 9, 9)), 16),
    (png(20, 20, (9, 9, 9)), 9),  # grown to at least 8 merged patches, keeping its shape: 3x3
], ids=["56x112", "112x56", "112x112", "20x20"])
def test_an_image_becomes_merged_patches_between_vision_tokens(vision: Engine, image: bytes, n_tokens: int) -> None:
    assert vision.projector is not None
    tokens = vision.projector.tokenize(native.MEDIA_MARKER + " hi", [image], add_special=True).tokens
    start, end = (vision.tokenize(t, add_special=False) for t in VISION_TOKENS)
    assert tokens[1:2] == start and tokens[2 + n_tokens:3 + n_tokens] == end
    assert sum(t < 0 for t in tokens) == n_tokens and all(t < 0 for t in tokens[2:2 + n_tokens])


def test_an_image_prompt_evaluates(vision: Engine) -> None:
    out = fresh(vision, "[img-0] what is this?", GREEDY, [TALL])
    # BOS, <|vision_start|>, the image, <|vision_end|>, then the text after the marker
    assert out.prompt_eval_count == 3 + N_IMAGE_TOKENS + len(vision.tokenize(" what is this?", add_special=False))
    assert out.eval_count == 6 and out.done_reason == "length"


def test_greedy_output_with_an_image_is_deterministic(vision: Engine) -> None:
    first = fresh(vision, "[img-0] describe", GREEDY, [TALL])
    second = fresh(vision, "[img-0] describe", GREEDY, [TALL])
    assert first.tokens == second.tokens and same_first_token_distribution(first, second)


def test_the_image_reaches_the_model(vision: Engine) -> None:
    red, blue = fresh(vision, "[img-0] colour?", ONE, [TALL]), fresh(vision, "[img-0] colour?", ONE, [WIDE])
    assert not same_first_token_distribution(red, blue)


def test_image_positions_are_two_dimensional(vision: Engine, files: tuple[Path, Path], tmp_path: Path) -> None:
    """Same weights, rotary pairs split otherwise between time, height and width: text positions have equal
    components, so text alone is unchanged; an image's patches differ in height and width, so it is not."""
    other = write_qwen2vl_text(tmp_path / "sections.gguf", seed=1, rope_sections=(4, 2, 2, 0))
    eng = Engine(str(other), LoadOptions(num_ctx=128, num_parallel=1), projector=str(files[1]))
    try:
        text = eng.submit("colour?", ONE, logprobs=5).result()
        image = eng.submit("[img-0] colour?", ONE, images=[TALL], logprobs=5).result()
    finally:
        eng.close()
    vision.clear_cache()
    assert same_first_token_distribution(text, vision.submit("colour?", ONE, logprobs=5).result())
    assert not same_first_token_distribution(image, fresh(vision, "[img-0] colour?", ONE, [TALL]))


def test_two_images_in_one_prompt(vision: Engine) -> None:
    out = fresh(vision, "[img-0] versus [img-1] which?", GREEDY, [TALL, WIDE])
    text = len(vision.tokenize(" versus ", add_special=False)) + len(vision.tokenize(" which?", add_special=False))
    assert out.prompt_eval_count == 1 + 2 * (N_IMAGE_TOKENS + 2) + text
    assert out.eval_count == 6
    again = fresh(vision, "[img-0] versus [img-1] which?", GREEDY, [TALL, WIDE])
    assert again.tokens == out.tokens


@pytest.mark.parametrize("first, first_options, second, images", [
    # the cache ends where the second prompt's new text begins
    pytest.param("[img-0] first question", ONE, "[img-0] first question and more", [TALL], id="more-text"),
    pytest.param("[img-0] a [img-1] b", ONE, "[img-0] a [img-1] b and c", [TALL, WIDE], id="two-images-more-text"),
    # the cache holds more than the shared prefix: the reply of the first turn, or other text
    pytest.param("[img-0] first question", GREEDY, "[img-0] first question and more", [TALL], id="after-a-reply"),
    pytest.param("[img-0] first question", GREEDY, "[img-0] first question", [TALL], id="same-prompt-again"),
    pytest.param("[img-0] first question", ONE, "[img-0] first answer", [TALL], id="other-text-after-the-image"),
])
def test_a_reused_image_continues_as_if_evaluated_afresh(vision: Engine, first: str, first_options: dict[str, Any],
                                                         second: str, images: list[bytes]) -> None:
    """Positions after a cached M-RoPE image are right: reusing it gives what evaluating everything gives."""
    expected = fresh(vision, second, GREEDY, images)
    fresh(vision, first, first_options, images)
    reused = vision.submit(second, GREEDY, images=images, logprobs=5).result()
    # only the text after the shared prefix (and at least the last token) is evaluated again
    assert reused.evaluated < expected.evaluated - len(images) * N_IMAGE_TOKENS
    assert reused.tokens == expected.tokens
    assert same_first_token_distribution(reused, expected)


def test_image_requests_in_parallel(vision: Engine) -> None:
    """Four sequences with images at once each give what they give alone."""
    jobs = [(f"[img-0] request {i}", [TALL if i % 2 else WIDE]) for i in range(3)]
    jobs.append(("[img-0] and [img-1] together", [WIDE, TALL]))
    options = {"temperature": 0, "num_predict": 5}
    alone = [fresh(vision, prompt, options, images).tokens for prompt, images in jobs]
    vision.clear_cache()
    results: list[Chunk | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = vision.submit(jobs[i][0], options, images=jobs[i][1]).result()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(r is not None and r.eval_count == 5 and r.done_reason == "length" for r in results)
    assert [r.tokens for r in results if r is not None] == alone
