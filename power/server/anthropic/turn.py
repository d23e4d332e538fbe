"""One Anthropic message generated over the shared inference path, with its stop sequences and thinking budget.

A ``Turn`` iterates ``Delta`` values from one ``Generation``, or two:

- **Thinking budget, enforced.** Once a thinking model has spent
  ``budget_tokens`` output tokens and its thinking is still open, the first
  generation is cancelled and a second one starts from the same prompt, the
  thinking so far (its first ``budget_tokens`` tokens) and the template's close
  tag, with thinking off and what is left of ``max_tokens``. The KV cache holds
  everything but the close tag, so only that is evaluated again; the answer
  grammar (a forced tool call) applies from the second generation's first token.
- **Stop sequences** are matched here, on the raw output, so the answer can say
  which one stopped it (``stop_sequence``); the engine is cancelled at the match.

Usage is Anthropic's: ``input_tokens`` evaluated, ``cache_read_input_tokens``
reused from the KV cache, ``output_tokens`` the thinking kept plus the answer;
one usage row is written per turn, however many generations it took.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from power.engine.stops import StopMatcher
from power.prompt import Delta, OutputParser, ThinkingParser
from power.server.anthropic.blocks import usage
from power.server.anthropic.prepare import Prepared
from power.server.inference import Generation, Job, Piece, Services
from power.server.prompting import parser_for, thinking_first
from power.server.usage import UsageRecord

__all__ = ["SequenceStops", "Turn"]

log = logging.getLogger(__name__)

ENDPOINT = "/v1/messages"


class SequenceStops(OutputParser):
    """An output parser that ends the text at the first of ``stops`` and remembers which one it was."""

    def __init__(self, parser: OutputParser, stops: Sequence[str]) -> None:
        super().__init__(parser.thinking, parser.tools)
        self._stops = StopMatcher(list(stops))  # the engine's own matcher, which also says which one hit
        self.stops = self._stops.stops
        self.muted = False  # output past the thinking budget is dropped, held text included

    @property
    def matched(self) -> str | None:
        return self._stops.matched

    def feed(self, text: str) -> Delta:
        if self.muted or self.matched is not None:
            return Delta()
        emit, _ = self._stops.feed(text)
        return super().feed(emit)

    def finish(self) -> Delta:
        if self.muted:
            return Delta()
        rest = self._stops.flush()
        return (super().feed(rest) if rest else Delta()) + super().finish()


def _halt(gen: Generation) -> None:
    """Cancel ``gen`` in the engine; its iteration goes on to the final chunk, which has the counts."""
    close = getattr(gen.stream, "close", None)
    if callable(close):
        close()


def _thinking_open(parser: OutputParser) -> bool:
    return parser.thinking is not None and parser.thinking.state.name == "THINKING"


class Turn:
    """The generation of one message; iterate for deltas, then read ``stop_reason`` and ``usage``.

    The first generation starts in ``__init__``, so a missing model, a full queue or a
    failed load raises before any answer is sent.
    """

    def __init__(self, services: Services, prep: Prepared, *, max_tokens: int, stops: Sequence[str] = (),
                 rid: str = "") -> None:
        self.services = replace(services, usage=None)  # the turn writes its own single usage row
        self.usage_store = services.usage
        self.prep = prep
        self.max_tokens = max_tokens
        self.stops = list(stops)
        self.rid = rid
        self.start = time.monotonic()
        self.parser = SequenceStops(parser_for(prep.source, prep.prompt, prep.tools, prep.think), self.stops)
        self.budget = prep.budget if self.parser.thinking is not None else None
        self.parts: list[tuple[dict[str, Any], int]] = []  # each generation's final chunk, output tokens kept
        self.tool_uses = 0
        self.halted: list[Generation] = []  # cancelled at a stop sequence
        self.cancelled = False
        # With a budget the first generation hands back its prompt's tokens, which the second one continues.
        job = Job(ENDPOINT, prep.view, prep.prompt, prep.options, None, self.parser,
                  grammar=thinking_first(prep.grammar, self.parser), rid=rid, images=prep.images,
                  context=self.budget is not None and not prep.images)
        self.gens = [Generation(self.services, job)]

    # ---- the answer ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Delta]:
        gen, parser = self.gens[0], self.parser
        pieces = iter(gen)
        outputs: list[int] = []
        shown: list[str] = []
        budget = self.budget
        for piece in pieces:
            outputs += piece.tokens
            if budget is not None and len(outputs) >= budget and parser.matched is None:
                # Chunks may carry several tokens: where the first ``budget`` tokens leave the thinking
                # is decided on their text, once.
                text = self.services.scheduler.detokenize(self.prep.view.name, outputs[:budget])
                if self._still_thinking(text):
                    yield from self._past_budget(gen, pieces, piece, outputs[:budget], text, "".join(shown))
                    return
                budget = None
            elif budget is not None and not _thinking_open(parser) and parser.thinking is not None \
                    and parser.thinking.state.name != "LOOKING":
                budget = None  # the thinking ended within the budget
            shown.append(piece.delta.thinking)
            yield self._note(gen, parser, piece)
        self._record()

    def _still_thinking(self, text: str) -> bool:
        thinking = self.parser.thinking
        assert thinking is not None
        split = ThinkingParser(thinking.open_tag, thinking.close_tag, start_in_thinking=thinking.start_in_thinking)
        split.feed(text)
        return split.state.name == "THINKING"

    def _past_budget(self, gen: Generation, pieces: Iterator[Piece], piece: Piece, kept: list[int], text: str,
                     shown: str) -> Iterator[Delta]:
        """Close the thinking after ``kept`` (whose text is ``text``) and answer in a second generation."""
        thinking = self.parser.thinking
        assert thinking is not None
        self.parser.muted = True
        final: dict[str, Any] = piece.final or {}
        if not final:
            _halt(gen)
            for rest in pieces:  # the cancelled generation's last chunk carries its counts
                final = rest.final or final
        self.parts.append((final, len(kept)))
        prep = self.prep
        split = ThinkingParser(thinking.open_tag, thinking.close_tag, start_in_thinking=thinking.start_in_thinking)
        thought = (split.feed(text) + split.finish()).thinking
        if len(thought) > len(shown) and thought.startswith(shown):
            yield Delta(thinking=thought[len(shown):])
        close = ("" if text[-1:].isspace() else "\n") + thinking.close_tag + "\n\n"
        parser = SequenceStops(parser_for(prep.source, prep.prompt + text + close, prep.tools, False), self.stops)
        prompt = self._continuation(final, kept, text, close)
        self.parser = parser
        log.info("thinking budget reached rid=%s model=%s budget=%d", self.rid, prep.view.name, len(kept))
        if self.cancelled:
            return
        options = {**prep.options, "num_predict": max(1, self.max_tokens - len(kept))}
        job = Job(ENDPOINT, prep.view, prompt, options, None, parser, grammar=prep.grammar, rid=self.rid,
                  images=prep.images)
        second = Generation(self.services, job)
        self.gens.append(second)
        if self.cancelled:
            _halt(second)
        for part in second:
            yield self._note(second, parser, part)
        self._record()

    def _continuation(self, final: dict[str, Any], kept: list[int], text: str, close: str) -> Any:
        """The second generation's prompt: the first one's tokens, the thinking kept, then the close tag's.

        As tokens, the KV cache holds all but the close tag exactly (text would be tokenized anew, and the
        model's own tokens are not always the tokenizer's). A prompt with images is continued as text: its
        image embeddings are no tokens to send back.
        """
        prep, scheduler = self.prep, self.services.scheduler
        prompt_ids = final.get("prompt_tokens")
        if not prompt_ids or prep.images:
            return prep.prompt + text + close
        lead = len(scheduler.tokenize(prep.view.name, ""))  # the BOS that tokenizing adds, if the model has one
        return list(prompt_ids) + kept + scheduler.tokenize(prep.view.name, close)[lead:]

    def _note(self, gen: Generation, parser: SequenceStops, piece: Piece) -> Delta:
        if parser.matched is not None and gen not in self.halted:
            self.halted.append(gen)
            _halt(gen)  # the rest is drained for the final counts, its text dropped
        self.tool_uses += len(piece.delta.tool_calls)
        if piece.final is not None:
            self.parts.append((piece.final, int(piece.final.get("eval_count") or 0)))
        return piece.delta

    # ---- how it ended ----------------------------------------------------------------------------
    @property
    def stop_reason(self) -> str:
        if self.tool_uses:
            return "tool_use"
        if self.parser.matched is not None:
            return "stop_sequence"
        last = self.parts[-1][0] if self.parts else {}
        return "max_tokens" if last.get("done_reason") == "length" else "end_turn"

    @property
    def stop_sequence(self) -> str | None:
        return self.parser.matched if not self.tool_uses else None

    def _counts(self) -> tuple[int, int, int]:
        first = self.parts[0][0] if self.parts else {}
        whole = int(first.get("prompt_eval_count") or 0)
        cached = min(int(first.get("cached_tokens") or 0), whole)
        return whole, cached, sum(kept for _, kept in self.parts)

    @property
    def usage(self) -> dict[str, int]:
        whole, cached, output = self._counts()
        return usage(whole - cached, cached, output)

    def _record(self) -> None:
        if self.usage_store is None or not self.parts:
            return
        whole, cached, output = self._counts()
        finals = [final for final, _ in self.parts]

        def total(key: str) -> int:
            return sum(int(f.get(key) or 0) for f in finals)

        self.usage_store.record(UsageRecord(
            endpoint=ENDPOINT, model=self.prep.view.name, prompt_tokens=whole, completion_tokens=output,
            total_duration_ns=int((time.monotonic() - self.start) * 1e9), load_duration_ns=total("load_duration"),
            prompt_eval_duration_ns=total("prompt_eval_duration"), eval_duration_ns=total("eval_duration"),
            request_id=self.rid, cached_tokens=cached))

    # ---- ending early ----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating (the client left); safe from another thread than the one iterating."""
        self.cancelled = True
        for gen in list(self.gens):
            _halt(gen)

    def close(self) -> None:
        """Release the generations; call from the thread that iterates, more than once if need be."""
        for gen in self.gens:
            gen.close()
