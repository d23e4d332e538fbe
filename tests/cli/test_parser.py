"""Argument parsing: Ollama's command names, aliases and flags."""

from __future__ import annotations

import pytest

from power.cli.parser import build_parser, normalize_argv
from power.cli.run import think_value


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(normalize_argv(list(argv)))


def test_run_flags() -> None:
    a = parse("run", "llama3.2", "why", "is", "the", "sky", "blue", "--format", "json", "--keepalive", "10m",
              "--verbose", "--nowordwrap", "--insecure", "--hidethinking")
    assert a.handler == "run:cmd_run" and a.model == "llama3.2"
    assert " ".join(a.prompt) == "why is the sky blue"
    assert (a.format, a.keepalive, a.verbose, a.nowordwrap, a.insecure, a.hidethinking) == \
        ("json", "10m", True, True, True, True)
    assert a.think is None


@pytest.mark.parametrize("argv, value", [
    (["--think"], True), (["--think=false"], False), (["--think=high"], "high"), ([], None),
])
def test_think_values(argv: list[str], value: object) -> None:
    assert think_value(parse("run", "m", *argv).think) == value


def test_bad_think_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("run", "m", "--think=loud")
    assert exc.value.code == 2
    assert "invalid value 'loud'" in capsys.readouterr().err


@pytest.mark.parametrize("alias, handler", [
    ("ls", "models:cmd_list"), ("list", "models:cmd_list"), ("start", "serve:cmd_serve"),
    ("serve", "serve:cmd_serve"), ("ps", "ps:cmd_ps"),
])
def test_aliases(alias: str, handler: str) -> None:
    assert parse(alias).handler == handler


def test_show_create_cp_rm_stop_pull() -> None:
    s = parse("show", "m", "--modelfile", "-v")
    assert s.modelfile and s.verbose and not s.license
    c = parse("create", "m", "-f", "Modelfile.x", "-q", "q4_K_M")
    assert (c.file, c.quantize) == ("Modelfile.x", "q4_K_M")
    assert (parse("cp", "a", "b").source, parse("cp", "a", "b").destination) == ("a", "b")
    assert parse("rm", "a", "b:1").models == ["a", "b:1"]
    assert parse("stop", "m").handler == "ps:cmd_stop"
    assert parse("pull", "m", "--insecure").insecure
    assert parse("list", "lla").prefix == "lla"


def test_version_flag_and_hidden_listen() -> None:
    assert parse("-v").version and parse("--version").version
    assert parse("serve", "--listen", "127.0.0.1:9").listen == "127.0.0.1:9"
    assert "--listen" not in build_parser()._subparsers._group_actions[0].choices["serve"].format_help()


def test_prompt_words_may_follow_flags(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import power.cli.run as run_module
    from power.cli.main import main

    seen = {}

    def fake_run(args, ctx):  # type: ignore[no-untyped-def]
        seen.update(think=args.think, prompt=args.prompt, verbose=args.verbose)
        return 0

    monkeypatch.setattr(run_module, "cmd_run", fake_run)
    assert main(["run", "m", "why", "--think", "is", "--verbose", "it"]) == 0
    assert seen == {"think": "true", "prompt": ["why", "is", "it"], "verbose": True}
    with pytest.raises(SystemExit):
        main(["run", "m", "x", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
