"""``list``, ``cp``, ``rm`` and ``create``: the local library, through the server or directly."""

from __future__ import annotations

import argparse
from pathlib import Path

from power.cli.context import Context
from power.cli.progress import ProgressView
from power.cli.render import list_rows, table
from power.errors import ModelfileError, PowerError
from power.names import parse_name
from power.store import parse_modelfile

__all__ = ["cmd_list", "cmd_cp", "cmd_rm", "cmd_create"]


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    rows = list_rows(ctx.models().list(), args.prefix)
    ctx.out.write(table(["NAME", "ID", "SIZE", "MODIFIED"], rows))
    return 0


def cmd_cp(args: argparse.Namespace, ctx: Context) -> int:
    ctx.models().copy(args.source, args.destination)
    print(f"copied '{args.source}' to '{args.destination}'", file=ctx.out)
    return 0


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    models = ctx.models()
    for name in args.models:
        models.delete(name)
        print(f"deleted '{name}'", file=ctx.out)
    return 0


def _read_modelfile(path_arg: str) -> tuple[str, Path]:
    path = Path(path_arg or "Modelfile").expanduser()
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if not path_arg:
            raise ModelfileError("no Modelfile or safetensors files found") from None
        raise ModelfileError(f"open {path_arg}: no such file or directory") from None
    except IsADirectoryError:
        raise ModelfileError(f"{path_arg} is a folder, not a Modelfile") from None
    except UnicodeDecodeError:
        raise ModelfileError("Modelfile is not valid UTF-8") from None
    return text, path.resolve().parent


def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    parse_name(args.model)
    text, base_dir = _read_modelfile(args.file)
    parse_modelfile(text)  # syntax errors first, before any progress is drawn
    view = ProgressView(ctx.err, tty=ctx.interactive_err)
    try:
        ctx.models().create(args.model, text, base_dir, quantize=args.quantize,
                            draft_quantize=args.draft_quantize, progress=view.update)
    except PowerError:
        view.close()
        raise
    view.close()
    return 0
