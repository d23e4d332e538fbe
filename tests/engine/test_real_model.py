"""The engine on a real small model (Gemma 3 270M from PyPI): the slow suite, which CI runs too."""

from __future__ import annotations

import math

import pytest

from power.engine import Engine, LoadOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    from tests.realmodels import gemma3_270m

    eng = Engine(str(gemma3_270m()), LoadOptions(num_ctx=1024, num_parallel=4, num_thread=2))
    yield eng
    eng.close()


def test_greedy_answer_is_sensible_and_deterministic(gemma: Engine) -> None:
    a = gemma.submit("The capital of France is", {"temperature": 0, "num_predict": 16}).result()
    b = gemma.submit("The capital of France is", {"temperature": 0, "num_predict": 16}).result()
    assert "France" in a.text or "Paris" in a.text
    assert a.text == b.text and a.eval_count == 16
    assert b.evaluated == 1 and b.prompt_eval_count == a.prompt_eval_count  # all but one token came from the cache


def test_greedy_scan_agrees_with_the_sampler_chain(gemma: Engine) -> None:
    # temperature 0 takes the shim's threaded argmax over 262k logits; top_k 1 goes through llama.cpp's chain
    prompts = [f"Write a short poem about the number {i}." for i in range(4)]
    fast = gemma.submit_many(prompts, {"temperature": 0, "num_predict": 12})
    chain = [gemma.submit(p, {"temperature": 1.0, "top_k": 1, "seed": 3, "num_predict": 12}) for p in prompts]
    assert [r.result().tokens for r in fast] == [r.result().tokens for r in chain]


@pytest.mark.parametrize("extra", [{}, {"repeat_penalty": 1.1}, {"presence_penalty": 0.6, "frequency_penalty": 0.3}])
def test_top_k_sampling_agrees_with_the_sampler_chain(gemma: Engine, extra: dict) -> None:
    # Ollama's defaults (top_k 40, top_p 0.9, temperature 0.8) over 262k logits, with and without penalties:
    # the shim's own top-k against llama.cpp's whole chain (the setting reference_sampling)
    from tests.realmodels import gemma3_270m

    prompts = [f"Tell me a story about a {animal}." for animal in ("cat", "dog", "fox", "owl")]
    fast = gemma.submit_many(prompts, {"seed": 11, "num_predict": 16, **extra})
    fast_tokens = [r.result().tokens for r in fast]
    with Engine(str(gemma3_270m()), LoadOptions(num_ctx=1024, num_parallel=4, num_thread=2,
                                                reference_sampling=True)) as reference:
        chain = reference.submit_many(prompts, {"seed": 11, "num_predict": 16, **extra})
        assert fast_tokens == [r.result().tokens for r in chain]


def test_stop_string_and_concurrency(gemma: Engine) -> None:
    reqs = [gemma.submit(f"List the numbers from 1 to 20, story {i}:", {"seed": i, "num_predict": 24})
            for i in range(4)]
    stopped = gemma.submit("The capital of France is", {"temperature": 0, "num_predict": 16, "stop": ["country"]})
    assert "country" not in stopped.result().text
    assert [r.result().eval_count for r in reqs] == [24] * 4


def test_multi_turn_reuses_earlier_turns(gemma: Engine) -> None:
    turn1 = "Question: what is two plus two?\nAnswer:"
    first = gemma.submit(turn1, {"temperature": 0, "num_predict": 8}).result()
    turn2 = gemma.tokenize(turn1) + list(first.tokens) + gemma.tokenize("\nQuestion: and three plus three?\nAnswer:",
                                                                       add_special=False)
    second = gemma.submit(turn2, {"temperature": 0, "num_predict": 8}).result()
    assert second.evaluated < len(turn2) // 2


def test_embeddings_are_normalised(gemma: Engine) -> None:
    res = gemma.embed(["The cat sat on the mat.", "A feline rested on the rug.", "Quarterly revenue grew."])
    vs = res.embeddings
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4) for v in vs)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))

    assert len(vs[0]) == gemma.info.n_embd
    assert cos(vs[0], vs[1]) > cos(vs[0], vs[2])


def test_json_grammar_gives_parseable_json(gemma: Engine) -> None:
    import json

    grammar = r'''
root   ::= "{" ws "\"name\":" ws string "," ws "\"age\":" ws number ws "}"
string ::= "\"" [a-zA-Z ]{1,20} "\""
number ::= [0-9]{1,3}
ws     ::= [ ]?
'''
    c = gemma.submit("A person record in JSON:", {"temperature": 0, "num_predict": 64}, grammar=grammar).result()
    obj = json.loads(c.text)
    assert set(obj) == {"name", "age"}
