"""Shell integration: bash completion with model names, and the man page from the parser."""

from __future__ import annotations

import argparse

from power.cli.context import Context
from power.cli.parser import build_parser
from power.errors import PowerError

__all__ = ["cmd_completion", "cmd_complete_models", "cmd_manpage", "BASH_COMPLETION", "manpage_text"]

# Model names carry ':' (``llama3.2:1b``), which bash splits words on by
# default (ollama#12909); the script completes the whole word itself.
BASH_COMPLETION = r"""# bash completion for a3s-power; load with: source <(a3s-power completion bash)
_a3s_power() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion -n : || return
    else
        cur="${COMP_WORDS[COMP_CWORD]}"; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD
    fi
    local commands="serve start create show run stop pull push list ls ps cp rm completion manpage help"
    if [[ $cword -eq 1 ]]; then
        COMPREPLY=($(compgen -W "$commands -v --version -h --help" -- "$cur"))
        return
    fi
    local cmd="${words[1]}" models=""
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$("${words[0]}" "$cmd" --help 2>/dev/null \
            | grep -oE -- '--?[a-zA-Z][a-zA-Z-]*' | sort -u)" -- "$cur"))
        return
    fi
    case "$cmd" in
        run|show|rm|cp|push|create) models=$("${words[0]}" complete-models 2>/dev/null) ;;
        stop) models=$("${words[0]}" complete-models --running 2>/dev/null) ;;
        *) return ;;
    esac
    COMPREPLY=($(compgen -W "$models" -- "$cur"))
    if declare -F __ltrim_colon_completions >/dev/null 2>&1; then
        __ltrim_colon_completions "$cur"
    fi
}
complete -F _a3s_power a3s-power
"""


def cmd_completion(args: argparse.Namespace, ctx: Context) -> int:
    ctx.out.write(BASH_COMPLETION)
    return 0


def cmd_complete_models(args: argparse.Namespace, ctx: Context) -> int:
    """Print model names one per line for the completion script; quiet on any failure."""
    try:
        if args.running:
            models = ctx.require_server().ps() if ctx.server_answers() else []
        else:
            models = ctx.models().list()
    except PowerError:
        return 0
    for m in models:
        ctx.out.write(f"{m.get('name') or m.get('model')}\n")
    return 0


def manpage_text() -> str:
    """The roff man page generated from the argparse tree (needs argparse-manpage)."""
    try:
        from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise PowerError("generating the man page needs the argparse-manpage package") from exc
    page = Manpage(build_parser(hidden=False), _data={"project_name": "a3s-power"})
    return str(page)


def cmd_manpage(args: argparse.Namespace, ctx: Context) -> int:
    ctx.out.write(manpage_text())
    return 0
