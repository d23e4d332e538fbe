"""Entry point: parse arguments, run one command, turn errors into ``Error: ...`` and exit codes."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Sequence

from power import __version__
from power.cli.context import Context
from power.cli.parser import build_parser, normalize_argv
from power.errors import PowerError

__all__ = ["main", "print_version"]

Handler = Callable[..., "int | None"]


def print_version(ctx: Context) -> int:
    """``-v``: the server's version when one answers, and the client's when they differ."""
    if ctx.server_answers():
        try:
            server = ctx.client.version()
        except PowerError:
            server = ""
        if server:
            print(f"a3s-power version is {server}", file=ctx.out)
            if server != __version__:
                print(f"Warning: client version is {__version__}", file=ctx.out)
            return 0
    print("Warning: could not connect to a running a3s-power instance", file=ctx.out)
    print(f"Warning: client version is {__version__}", file=ctx.out)
    return 0


def _handler(spec: str) -> Handler:
    module, func = spec.split(":")
    handler: Handler = getattr(importlib.import_module(f"power.cli.{module}"), func)
    return handler


def main(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    """Run the CLI; return the process exit status (never raises for expected failures)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(normalize_argv(list(sys.argv[1:] if argv is None else argv)))
    if extra and args.command == "run" and not any(e.startswith("-") for e in extra):
        # argparse ends a nargs="*" positional at the first flag; prompt words may follow flags.
        args.prompt = [*args.prompt, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    ctx = ctx or Context()
    try:
        if args.version:
            return print_version(ctx)
        if args.handler is None:
            parser.print_help(ctx.out)
            return 0
        return int(_handler(args.handler)(args, ctx) or 0)
    except PowerError as exc:
        _error(ctx, str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        ctx.err.write("\n")
        return 130
    except BrokenPipeError:
        # The reader went away (``a3s-power list | head``): not an error worth a word.
        _silence_stdout()
        return 0
    except OSError as exc:
        _error(ctx, exc.strerror or str(exc))
        return 1


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _error(ctx: Context, message: str) -> None:
    try:
        ctx.err.write(f"Error: {message}\n")
        ctx.err.flush()
    except (OSError, ValueError):
        pass
