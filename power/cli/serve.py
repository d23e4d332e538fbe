"""``serve`` (alias ``start``): run the HTTP server in the foreground under gunicorn."""

from __future__ import annotations

import argparse

from power.cli.context import Context
from power.config import parse_host
from power.errors import PowerError

__all__ = ["cmd_serve"]


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    settings = ctx.settings
    if args.listen:
        # The private server of ``run`` is told its address here, not through the environment.
        scheme, host, port = parse_host(args.listen)
        settings = settings.with_(scheme=scheme, host=host, port=port)
    try:
        from power.server.serve import serve
    except ImportError as exc:
        raise PowerError(f"the server is not available in this installation: {exc}") from exc
    return int(serve(settings) or 0)
