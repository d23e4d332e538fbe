"""``run MODEL [PROMPT]``: one answer streamed to stdout, an embedding, or the REPL.

A prompt on the command line or piped on stdin gets one streamed answer
through ``/api/generate``; no prompt on a terminal opens the REPL, which talks
through ``/api/chat``. A model that is not here is pulled first. With no server
at OLLAMA_HOST the context starts a private one for the duration of the call.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, TextIO

from power.cli.context import Context
from power.cli.images import extract_images
from power.cli.progress import ProgressView
from power.cli.render import WordWrap, metrics_summary
from power.cli.transfer import pull_model
from power.client import Client, HTTPStatusError
from power.errors import InvalidRequest, NotFound

__all__ = ["RunOptions", "AnswerPrinter", "cmd_run", "ensure_model", "load_view", "stream_answer", "think_value"]

GRAY, RESET = "\x1b[90m", "\x1b[0m"


def think_value(text: str | None) -> bool | str | None:
    """``--think`` as the API wants it: absent, a boolean, or a level name."""
    if text is None:
        return None
    if text in ("true", "false"):
        return text == "true"
    return text


def _format_value(text: str) -> str | dict[str, Any]:
    if not text:
        return ""
    if text == "json":
        return text
    try:
        schema = json.loads(text)
    except ValueError:
        raise InvalidRequest(f"invalid format {text!r}: use \"json\" or a JSON schema") from None
    if not isinstance(schema, dict):
        raise InvalidRequest("invalid format: a JSON schema must be an object")
    return schema


@dataclass
class RunOptions:
    """What shapes every request of one ``run``; the REPL's ``/set`` changes it."""

    model: str
    format: str | dict[str, Any] = ""
    keep_alive: str | None = None
    verbose: bool = False
    wordwrap: bool = True
    think: bool | str | None = None
    hide_thinking: bool = False
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    insecure: bool = False

    def request(self, **body: Any) -> dict[str, Any]:
        # load_progress: a model that has to load first reports it, and the CLI draws a bar
        out: dict[str, Any] = {"model": self.model, "load_progress": True, **body}
        if self.format:
            out["format"] = self.format
        if self.keep_alive is not None:
            out["keep_alive"] = self.keep_alive
        if self.think is not None:
            out["think"] = self.think
        if self.options:
            out["options"] = dict(self.options)
        return out


class AnswerPrinter:
    """Writes streamed thinking and content: ``Thinking...`` framing, gray on a terminal, word wrap.

    ``progress`` (on stderr) draws the bar of a model load reported ahead of the answer.
    """

    def __init__(self, out: TextIO, *, tty: bool, wordwrap: bool, hide_thinking: bool,
                 progress: ProgressView | None = None) -> None:
        self.out = out
        self.progress = progress
        self.tty = tty
        width = shutil.get_terminal_size((80, 24)).columns - 5 if wordwrap else 0
        self.wrap = WordWrap(max(width, 10) if wordwrap else 0)
        self.hide_thinking = hide_thinking
        self.in_thinking = False
        self.last = ""

    def loading(self, status: Mapping[str, Any]) -> None:
        if self.progress is not None:
            self.progress.update(status)

    def _end_loading(self) -> None:
        if self.progress is not None and self.progress.lines:
            self.progress.close()
        self.progress = None

    def _write(self, text: str) -> None:
        if text:
            self._end_loading()
            self.out.write(text)
            self.out.flush()
            self.last = text

    def thinking(self, text: str) -> None:
        if self.hide_thinking or not text:
            return
        if not self.in_thinking:
            self.in_thinking = True
            self._write((GRAY if self.tty else "") + "Thinking...\n")
        self._write(self.wrap.feed(text))

    def content(self, text: str) -> None:
        if not text:
            return
        self._end_thinking()
        self._write(self.wrap.feed(text))

    def _end_thinking(self) -> None:
        if self.in_thinking:
            self.in_thinking = False
            self._write(self.wrap.flush())
            self.wrap.column = 0
            self._write("\n...done thinking.\n\n" + (RESET if self.tty else ""))

    def finish(self) -> None:
        self._end_loading()
        self._end_thinking()
        self._write(self.wrap.flush())
        if self.last and not self.last.endswith("\n"):
            self._write("\n")
        self.wrap.column = 0


def stream_answer(chunks: Iterable[Mapping[str, Any]], printer: AnswerPrinter,
                  ) -> tuple[str, str, dict[str, Any]]:
    """Print a generate or chat stream; return (content, thinking, final chunk)."""
    content: list[str] = []
    thinking: list[str] = []
    final: dict[str, Any] = {}
    for chunk in chunks:
        if chunk.get("status") == "loading model":
            printer.loading(chunk)
            continue
        msg = chunk.get("message") if isinstance(chunk.get("message"), dict) else None
        think = (msg or chunk).get("thinking") or ""
        text = (msg.get("content") if msg else chunk.get("response")) or ""
        if think:
            thinking.append(think)
            printer.thinking(think)
        if text:
            content.append(text)
            printer.content(text)
        if msg and msg.get("tool_calls"):
            printer.content(json.dumps(msg["tool_calls"], ensure_ascii=False))
        if chunk.get("done"):
            final = dict(chunk)
    printer.finish()
    return "".join(content), "".join(thinking), final


def load_view(ctx: Context) -> ProgressView:
    """Where a model load's bar is drawn: stderr, as pull's."""
    return ProgressView(ctx.err, tty=ctx.interactive_err)


def ensure_model(ctx: Context, client: Client, model: str, insecure: bool = False) -> dict[str, Any]:
    """``/api/show`` for ``model``, pulling it first when the server does not have it."""
    try:
        return client.show(model)
    except NotFound as missing:
        try:
            pull_model(ctx, client.pull, model, insecure)
        except HTTPStatusError as exc:
            if exc.status == 501:  # no registry support on this server: the model is just missing
                raise missing from exc
            raise
        return client.show(model)


def _embed(ctx: Context, client: Client, opts: RunOptions, text: str, args: argparse.Namespace) -> int:
    if not text:
        raise InvalidRequest(f"embedding models require input text. Usage: a3s-power run {opts.model} [TEXT]")
    body: dict[str, Any] = {"model": opts.model, "input": text}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    if args.truncate is not None:
        body["truncate"] = args.truncate
    if args.dimensions:
        body["dimensions"] = args.dimensions
    for vector in client.embed(body).get("embeddings") or []:
        print(json.dumps(vector), file=ctx.out)
    return 0


def generate_once(ctx: Context, client: Client, opts: RunOptions, prompt: str,
                  images: list[str] | None = None) -> dict[str, Any]:
    """Stream one ``/api/generate`` answer to stdout; print timings when verbose."""
    body = opts.request(prompt=prompt)
    if images:
        body["images"] = images
    if opts.system:
        body["system"] = opts.system
    printer = AnswerPrinter(ctx.out, tty=ctx.interactive_out, wordwrap=opts.wordwrap,
                            hide_thinking=opts.hide_thinking, progress=load_view(ctx))
    _, _, final = stream_answer(client.generate(body), printer)
    if opts.verbose:
        ctx.err.write(metrics_summary(final))
        ctx.err.flush()
    return final


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    prompt = " ".join(args.prompt)
    piped = not ctx.interactive_in
    if piped:
        data = ctx.stdin.read()
        prompt = " ".join(p for p in (data, prompt) if p)
    interactive = not piped and not prompt
    think = think_value(args.think)
    opts = RunOptions(
        model=args.model, format=_format_value(args.format), keep_alive=args.keepalive,
        verbose=args.verbose, insecure=args.insecure,
        wordwrap=not args.nowordwrap and ctx.interactive_out and not piped,
        think=think,
        # Piped output gets only the answer unless thinking was asked for explicitly.
        hide_thinking=args.hidethinking or (think is None and not ctx.interactive_out),
    )
    with ctx.inference() as client:
        info = ensure_model(ctx, client, opts.model, opts.insecure)
        caps = info.get("capabilities") or []
        if "embedding" in caps and "completion" not in caps:
            return _embed(ctx, client, opts, prompt, args)
        if interactive:
            from power.cli.repl import Repl

            return Repl(ctx, client, opts, info).loop()
        images: list[str] = []
        if "vision" in caps:
            prompt, images = extract_images(prompt, err=ctx.err)
        generate_once(ctx, client, opts, prompt, images)
    return 0
