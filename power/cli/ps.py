"""``ps`` and ``stop``: the models a running server holds in memory."""

from __future__ import annotations

import argparse

from power.cli.context import Context
from power.cli.render import ps_rows, table
from power.errors import NotFound

__all__ = ["cmd_ps", "cmd_stop"]


def cmd_ps(args: argparse.Namespace, ctx: Context) -> int:
    models = ctx.require_server().ps()
    ctx.out.write(table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], ps_rows(models)))
    return 0


def cmd_stop(args: argparse.Namespace, ctx: Context) -> int:
    client = ctx.require_server()
    try:
        for _ in client.generate({"model": args.model, "keep_alive": 0}):
            pass
    except NotFound:
        raise NotFound(f"couldn't find model \"{args.model}\" to stop") from None
    return 0
