"""The argparse tree: Ollama's commands, aliases and flags.

Each subcommand records ``handler`` as ``"module:function"`` inside
``power.cli``; the module is imported only when that command runs, so
``a3s-power list`` never pays for the server's imports.
"""

from __future__ import annotations

import argparse

__all__ = ["build_parser", "normalize_argv", "THINK_LEVELS"]

THINK_LEVELS = ("true", "false", "low", "medium", "high", "max")
SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _think(value: str) -> str:
    v = value.strip().lower()
    if v not in THINK_LEVELS:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: use true, false, low, medium or high")
    return v


def normalize_argv(argv: list[str]) -> list[str]:
    """Give a bare ``--think`` its value, so ``run m --think why?`` keeps ``why?`` as the prompt.

    Ollama's flag takes a level only as ``--think=high``; argparse would
    otherwise swallow the next word.
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        out.append("--think=true" if arg == "--think" else arg)
    return out


def _add(sub: argparse._SubParsersAction, name: str, handler: str, help_: str,
         aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    p = sub.add_parser(name, aliases=list(aliases), help=help_, description=help_,
                       formatter_class=_Formatter)
    p.set_defaults(handler=handler, command=name)
    return p


def build_parser(*, hidden: bool = True) -> argparse.ArgumentParser:
    """The root parser of ``a3s-power``; ``hidden=False`` leaves out internal helpers (man page)."""
    root = argparse.ArgumentParser(
        prog="a3s-power", formatter_class=_Formatter,
        description="Large language model runner: a drop-in replacement for Ollama over llama.cpp.",
        epilog="Environment: OLLAMA_HOST (server address), OLLAMA_MODELS (models folder), "
               "A3S_POWER_HOME (data folder), OLLAMA_KEEP_ALIVE, OLLAMA_NUM_PARALLEL and the other "
               "OLLAMA_* variables.")
    root.add_argument("-v", "--version", action="store_true", help="Show version information")
    root.set_defaults(handler=None, command=None)
    sub = root.add_subparsers(title="commands", metavar="COMMAND")

    p = _add(sub, "serve", "serve:cmd_serve", "Start the server", aliases=("start",))
    p.add_argument("--listen", help=argparse.SUPPRESS)

    p = _add(sub, "create", "models:cmd_create", "Create a model from a Modelfile")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-f", "--file", default="", help='Name of the Modelfile (default "Modelfile")')
    p.add_argument("-q", "--quantize", default="", help="Quantize model to this level (e.g. q4_K_M)")
    p.add_argument("--draft-quantize", default="", help="Quantize the DRAFT model to this level (e.g. q2_K)")

    p = _add(sub, "show", "show:cmd_show", "Show information for a model")
    p.add_argument("model", metavar="MODEL")
    for f in SHOW_FIELDS:
        p.add_argument(f"--{f}", action="store_true", help=f"Show {f} of a model")
    p.add_argument("-v", "--verbose", action="store_true", help="Show detailed model information")

    p = _add(sub, "run", "run:cmd_run", "Run a model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("prompt", metavar="PROMPT", nargs="*", help="Prompt (also read from piped stdin)")
    p.add_argument("--format", default="", help='Response format (e.g. "json")')
    p.add_argument("--keepalive", default=None, help='Duration to keep a model loaded (e.g. "5m")')
    p.add_argument("--verbose", action="store_true", help="Show timings for response")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
    p.add_argument("--nowordwrap", action="store_true", help="Don't wrap words to the next line")
    p.add_argument("--think", nargs="?", const="true", default=None, type=_think,
                   help="Enable thinking mode: true/false or high/medium/low")
    p.add_argument("--hidethinking", action="store_true", help="Hide thinking output (if provided)")
    p.add_argument("--truncate", action="store_true", default=None,
                   help="For embedding models: truncate inputs that exceed the context length")
    p.add_argument("--dimensions", type=int, default=0, help="Truncate output embeddings to this size")

    p = _add(sub, "stop", "ps:cmd_stop", "Stop a running model")
    p.add_argument("model", metavar="MODEL")

    p = _add(sub, "pull", "transfer:cmd_pull", "Pull a model from a registry")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")

    p = _add(sub, "push", "transfer:cmd_push", "Push a model to a registry")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")

    p = _add(sub, "list", "models:cmd_list", "List models", aliases=("ls",))
    p.add_argument("prefix", nargs="?", default="", help="Only models whose name starts with this")

    _add(sub, "ps", "ps:cmd_ps", "List running models")

    p = _add(sub, "cp", "models:cmd_cp", "Copy a model")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("destination", metavar="DESTINATION")

    p = _add(sub, "rm", "models:cmd_rm", "Remove a model")
    p.add_argument("models", metavar="MODEL", nargs="+")

    p = _add(sub, "rpc-server", "rpcserver:cmd_rpc_server",
             "Serve this machine's devices to llama.cpp RPC clients (see A3S_POWER_RPC_SERVERS)")
    p.add_argument("--host", default="127.0.0.1",
                   help="Address to bind (default 127.0.0.1; the RPC protocol has no authentication)")
    p.add_argument("--port", type=int, default=50052, help="Port to bind (default 50052)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")
    p.add_argument("--mem", type=int, default=None, metavar="MiB",
                   help="Report at most this much memory to clients (default: what the device has free)")
    p.add_argument("--cache", default="", metavar="DIR",
                   help="Keep large tensors clients send in this folder, so reloads skip sending them")

    p = _add(sub, "completion", "extras:cmd_completion", "Print a bash completion script")
    p.add_argument("shell", nargs="?", default="bash", choices=("bash",))
    _add(sub, "manpage", "extras:cmd_manpage", "Print the man page (roff)")
    if hidden:
        p = _add(sub, "complete-models", "extras:cmd_complete_models", argparse.SUPPRESS)
        p.add_argument("--running", action="store_true")
        # The completion helper must not show up in the command list.
        sub._choices_actions = [a for a in sub._choices_actions if a.dest != "complete-models"]
    return root

