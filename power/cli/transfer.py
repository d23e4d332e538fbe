"""``pull`` and ``push``: registry transfers through the server, drawn as per-layer progress bars."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterator, Mapping

from power.cli.context import Context
from power.cli.progress import ProgressView

__all__ = ["cmd_pull", "cmd_push", "pull_model"]

Stream = Callable[[Mapping[str, Any]], Iterator[dict[str, Any]]]


def _transfer(stream: Stream, model: str, insecure: bool, ctx: Context) -> None:
    body: dict[str, Any] = {"model": model}
    if insecure:
        body["insecure"] = True
    view = ProgressView(ctx.err, tty=ctx.interactive_err)
    try:
        for status in stream(body):
            view.update(status)
    finally:
        view.close()


def pull_model(ctx: Context, client_pull: Stream, model: str, insecure: bool = False) -> None:
    """Pull with progress; used by ``pull`` and by ``run`` for a model that is not here yet."""
    _transfer(client_pull, model, insecure, ctx)


def cmd_pull(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.inference() as client:
        _transfer(client.pull, args.model, args.insecure, ctx)
    return 0


def cmd_push(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.inference() as client:
        _transfer(client.push, args.model, args.insecure, ctx)
    return 0
