"""Images through libmtmd: a tiny LLaVA-style projector over the tiny text model, in the real engine."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from power import native
from power.engine import Engine, LoadOptions
from power.engine.core import place_media
from power.errors import InvalidRequest, NativeError
from tests.tinymodels import png, write_llama, write_mmproj

N_IMAGE_TOKENS = 4  # 28x28 pixels in 14x14 patches
GREEDY = {"temperature": 0, "num_predict": 6}
RED, BLUE = png(40, 30, (220, 20, 20)), png(40, 30, (20, 20, 220))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("vision")
    return write_llama(d / "text.gguf", seed=1), write_mmproj(d / "mmproj.gguf", n_embd_text=64)


@pytest.fixture(scope="module")
def vision(files: tuple[Path, Path]):
    model, mmproj = files
    eng = Engine(str(model), LoadOptions(num_ctx=256, num_parallel=4, num_batch=128), projector=str(mmproj))
    yield eng
    eng.close()


def test_place_media_orders_images_by_tag() -> None:
    a, b, c = b"A", b"B", b"C"
    m = native.MEDIA_MARKER
    assert place_media("[img-1] x [img-0]", [a, b]) == (f"{m} x {m}", [b, a])
    assert place_media("[img-0] and [img-0] again", [a]) == (f"{m} and {m} again", [a, a])
    # an image no tag names goes in front; a tag naming no image stays text
    assert place_media("see [img-1] [img-7]", [a, b, c]) == (f"{m}{m}see {m} [img-7]", [a, c, b])
    # a literal marker in user text never becomes an image
    assert place_media(f"{m}[img-0]", [a]) == (m, [a])


def test_projector_reports_what_it_takes(vision: Engine) -> None:
    assert vision.projector is not None
    info = vision.projector.info
    assert info.vision and not info.audio and not info.mrope and info.n_embd == 64


def test_an_image_adds_its_tokens_to_the_prompt(vision: Engine) -> None:
    vision.clear_cache()  # nothing cached: every prompt token is evaluated
    text_only = vision.submit("what is this?", GREEDY).result()
    vision.clear_cache()
    with_image = vision.submit("[img-0] what is this?", GREEDY, images=[RED]).result()
    assert text_only.prompt_eval_count == len(vision.tokenize("what is this?"))
    # BOS, the image, then the text after the marker
    assert with_image.prompt_eval_count == N_IMAGE_TOKENS + len(vision.tokenize(" what is this?"))
    assert with_image.eval_count == 6


def test_greedy_output_with_an_image_is_deterministic(vision: Engine) -> None:
    vision.clear_cache()  # no reuse: both runs evaluate the image
    first = vision.submit("[img-0] describe", GREEDY, images=[RED]).result()
    vision.clear_cache()
    second = vision.submit("[img-0] describe", GREEDY, images=[RED]).result()
    assert first.text == second.text and first.tokens == second.tokens


def test_the_image_reaches_the_model(vision: Engine) -> None:
    """Different pictures give different next-token distributions; the same picture the same one."""
    def first_logprobs(image: bytes) -> tuple[tuple[str, float], ...]:
        vision.clear_cache()
        out = vision.submit("[img-0] colour?", {"temperature": 0, "num_predict": 1}, images=[image],
                            logprobs=5).result()
        return tuple((t, round(lp, 3)) for t, lp, _ in out.logprobs[0].top)

    red, blue = first_logprobs(RED), first_logprobs(BLUE)
    assert red != blue
    assert first_logprobs(RED) == red


def test_a_cached_image_is_reused_and_a_new_one_is_not(vision: Engine) -> None:
    vision.clear_cache()
    turn1 = vision.submit("[img-0] first question", GREEDY, images=[RED]).result()
    assert turn1.prompt_eval_count > N_IMAGE_TOKENS
    # Same image and text, more words: only the new tail (and the last token again) is evaluated.
    turn2 = vision.submit("[img-0] first question and more", GREEDY, images=[RED]).result()
    assert turn2.evaluated < turn1.evaluated
    assert turn2.evaluated <= len(vision.tokenize(" and more")) + 1
    # Another image right after the same BOS: the image and everything after it is evaluated again.
    turn3 = vision.submit("[img-0] first question and more", GREEDY, images=[BLUE]).result()
    assert turn3.evaluated >= N_IMAGE_TOKENS + len(vision.tokenize(" first question and more")) - 1


def test_choices_of_a_prompt_with_an_image_encode_it_once(vision: Engine) -> None:
    vision.clear_cache()
    alone = vision.submit("[img-0] tell me", GREEDY, images=[BLUE]).result()
    vision.clear_cache()
    before = vision.stats()
    outs = [r.result() for r in vision.submit_choices("[img-0] tell me", 3, GREEDY, images=[BLUE])]
    st = vision.stats()
    assert st["n_prompt_tokens"] - before["n_prompt_tokens"] == alone.prompt_eval_count
    assert st["kv_copies"] - before["kv_copies"] == 2
    assert [o.cached_tokens for o in outs] == [0] + [alone.prompt_eval_count] * 2
    assert all(o.tokens == alone.tokens for o in outs)  # the copied cells hold the image



def test_a_choice_whose_leader_ends_in_its_image_evaluates_the_prompt_itself(files: tuple[Path, Path]) -> None:
    model_path, mmproj = files
    greedy = native.Sampling(temperature=0, num_predict=6)
    with native.Model(model_path) as model:
        proj = native.Projector(model, mmproj, use_gpu=False)
        answers = []
        for cancel in (False, True):
            ctx = native.Context(model, n_ctx=256, n_seq=2, n_batch=4, n_ubatch=4)
            ctx.set_projector(proj)
            media = proj.tokenize(f"{native.MEDIA_MARKER} tell me more, please", [BLUE])
            leader = ctx.submit(media, greedy)
            choice = ctx.submit_choice(leader, greedy)
            ctx.step()  # the image, in decodes of its own, and the first text chunk
            if cancel:
                ctx.cancel(leader)
            done: dict[int, list[int]] = {leader: [], choice: []}
            live = {choice} if cancel else {leader, choice}
            while live:
                for ev in ctx.step().events:
                    if ev.seq in done and ev.finish != native.FINISH_CANCEL:
                        done[ev.seq].append(ev.token)
                    if ev.finish != native.FINISH_NONE:
                        live.discard(ev.seq)
            answers.append((done[leader], done[choice]))
            ctx.close()
        proj.close()
    shared, fallback = answers
    assert shared[0] == shared[1] and len(shared[0]) == 6
    assert fallback[1] == shared[1]


def test_two_images_in_one_prompt(vision: Engine) -> None:
    vision.clear_cache()
    out = vision.submit("[img-0] versus [img-1] which?", GREEDY, images=[RED, BLUE]).result()
    text = len(vision.tokenize(" versus ", add_special=False)) + len(vision.tokenize(" which?", add_special=False))
    assert out.prompt_eval_count == 1 + 2 * N_IMAGE_TOKENS + text
    assert out.eval_count == 6


def test_a_prompt_cannot_end_with_an_image(vision: Engine) -> None:
    with pytest.raises(InvalidRequest, match="cannot end with an image"):
        vision.submit("look: [img-0]", GREEDY, images=[RED])


def test_image_requests_batch_with_text_requests(vision: Engine) -> None:
    results: list[object] = [None] * 8
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            images = [RED if i % 2 else BLUE] if i % 4 < 2 else []
            prompt = f"[img-0] request {i}" if images else f"request {i}"
            results[i] = vision.submit(prompt, {"temperature": 0, "num_predict": 5}, images=images).result()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(r is not None and r.eval_count == 5 and r.done_reason == "length" for r in results)


@pytest.mark.parametrize("data, needle", [
    (b"not an image at all", "could not be decoded"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "could not be decoded"),
])
def test_bad_images_are_invalid_requests(vision: Engine, data: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        vision.submit("[img-0] what?", GREEDY, images=[data])
    assert vision.submit("still serving", GREEDY).result().eval_count == 6


def test_a_prompt_with_images_that_does_not_fit_is_refused(vision: Engine) -> None:
    with pytest.raises(InvalidRequest, match="exceeds the context length"):
        vision.submit("[img-0] " + "word " * 400, GREEDY, images=[RED])


def test_images_need_a_projector(files: tuple[Path, Path]) -> None:
    eng = Engine(str(files[0]), LoadOptions(num_ctx=128, num_parallel=1))
    try:
        with pytest.raises(InvalidRequest, match="no projector"):
            eng.submit("[img-0] what?", GREEDY, images=[RED])
    finally:
        eng.close()


def test_a_projector_for_another_model_fails_to_load(tmp_path: Path, files: tuple[Path, Path]) -> None:
    wrong = write_mmproj(tmp_path / "wrong.gguf", n_embd_text=32)
    with pytest.raises(NativeError, match="projector"):
        Engine(str(files[0]), LoadOptions(num_ctx=128, num_parallel=1), projector=str(wrong))
    with pytest.raises(NativeError, match="projector"):
        Engine(str(files[0]), LoadOptions(num_ctx=128, num_parallel=1), projector=str(files[0]))


def test_a_gemma3_projector_decodes_images_non_causally(tmp_path: Path, files: tuple[Path, Path]) -> None:
    mmproj = write_mmproj(tmp_path / "gemma3.gguf", kind="gemma3", image_size=56, merge=2)
    eng = Engine(str(files[0]), LoadOptions(num_ctx=256, num_parallel=2, num_batch=64), projector=str(mmproj))
    try:
        assert eng.projector is not None and eng.projector.info.non_causal
        out = eng.submit("[img-0] what?", GREEDY, images=[BLUE]).result()
        # <start_of_image> (text here), 4x4 patches pooled 2x2, <end_of_image>
        assert out.eval_count == 6 and out.prompt_eval_count > N_IMAGE_TOKENS
    finally:
        eng.close()


def test_an_image_larger_than_the_batch_of_a_non_causal_projector_is_refused(
        tmp_path: Path, files: tuple[Path, Path]) -> None:
    mmproj = write_mmproj(tmp_path / "gemma3.gguf", kind="gemma3", image_size=112, merge=2)  # 8x8 -> 16 tokens
    eng = Engine(str(files[0]), LoadOptions(num_ctx=256, num_parallel=1, num_batch=8), projector=str(mmproj))
    try:
        req = eng.submit("[img-0] what?", GREEDY, images=[BLUE])
        with pytest.raises(InvalidRequest, match="num_batch of at least 16"):
            req.result()
        assert eng.submit("still serving", GREEDY).result().eval_count == 6
    finally:
        eng.close()
