"""Tool-call and thinking syntaxes, one module per model family, named after it.

``family_of(template)`` finds the family a Jinja chat template writes its calls
in (by the tags it mentions; the most specific first). Families whose calls are
plain JSON (Llama 3, Mistral) are read by ``parsing.tools.ToolCallParser``.

Adding a family: a module with a ``Family(name, open, close, reader)`` (the
readers in ``readers`` cover JSON, XML parameters, key/value tags and Python
call syntax), its ``forced`` syntax (``Forced``, written by ``grammars.calls``),
and a place in ``FAMILIES``. Families that write their whole answer in sections
or channels (gpt-oss, Kimi K3) have a ``channels`` parser of their own instead.
"""

from __future__ import annotations

from power.prompt.families import (
    apertus,
    apriel,
    cohere,
    deepseek,
    firefunction,
    functionary,
    gemma4,
    gigachat,
    glm,
    granite,
    harmony,
    hermes,
    hy3,
    kimi,
    kimi_k3,
    lfm2,
    minicpm,
    minimax,
    minimax_m3,
    muse,
    nemotron,
    qwen3_coder,
    seed_oss,
    solar,
)
from power.prompt.families.family import Family, FamilyParser

__all__ = ["FAMILIES", "THINKING_TAGS", "Family", "FamilyParser", "family_of", "family_thinking"]

FAMILIES: tuple[Family, ...] = (
    harmony.FAMILY, muse.FAMILY, deepseek.DSML, deepseek.DSML_V4, deepseek.FAMILY, kimi_k3.FAMILY, kimi.FAMILY,
    solar.FAMILY, hy3.FAMILY, seed_oss.FAMILY, minimax_m3.FAMILY, minimax.FAMILY, gemma4.FAMILY, cohere.FAMILY,
    cohere.COMMAND_R_PLUS, nemotron.FAMILY, apertus.FAMILY, lfm2.FAMILY, granite.FAMILY,
    functionary.V3_1, functionary.FAMILY, firefunction.FAMILY, gigachat.FAMILY, gigachat.V3,
    minicpm.FAMILY, apriel.FAMILY, qwen3_coder.FAMILY, glm.FAMILY, hermes.FAMILY,
)

# Thinking tags besides the families' own, most specific first; <think> is the default.
THINKING_TAGS: tuple[tuple[str, str], ...] = (
    *(f.think for f in FAMILIES if f.think),
    ("[THINK]", "[/THINK]"),  # Ministral / Magistral
)


def family_of(source: str | None) -> Family | None:
    """The tool-call family a chat template's source shows, or None."""
    if not source:
        return None
    return next((f for f in FAMILIES if f.found_in(source)), None)


def family_thinking(source: str | None) -> tuple[str, str] | None:
    """Thinking tags other than ``<think>`` that a chat template's source shows."""
    if not source:
        return None
    family = family_of(source)
    if family is not None and family.think is not None:  # its own, even where the template builds them (Kimi K3)
        return family.think
    return next((tags for tags in THINKING_TAGS if tags[0] in source), None)
