"""The REPL scripted line by line against a fake server client."""

from __future__ import annotations

import io
from typing import Any, Iterator, Mapping

from power.cli.context import Context
from power.cli.repl import HELP, Repl
from power.cli.run import RunOptions
from power.config import load_settings


class FakeClient:
    """Stands in for ``power.client.Client``: answers each chat turn with a scripted reply."""

    def __init__(self) -> None:
        self.chats: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []

    def chat(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        self.chats.append(dict(body))
        if body["messages"]:
            n = sum(1 for m in body["messages"] if m["role"] == "user")
            yield {"message": {"role": "assistant", "thinking": "hmm"}, "done": False}
            yield {"message": {"role": "assistant", "content": f"reply {n}"}, "done": False}
        yield {"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 3,
               "eval_duration": 1_000_000_000, "total_duration": 2_000_000_000}

    def show(self, model: str, verbose: bool = False) -> dict[str, Any]:
        return {"system": "", "template": "{{ .Prompt }}", "capabilities": ["completion"]}

    def create(self, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        self.created.append(dict(body))
        yield {"status": "success"}

    def tags(self) -> list[dict[str, Any]]:
        return [{"name": "tiny:latest", "digest": "a" * 64, "size": 1000}]


def session(lines: list[str], hide_thinking: bool = False) -> tuple[Repl, FakeClient, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ctx = Context(settings=load_settings({"A3S_POWER_HOME": "/nonexistent"}), out=out, err=err,
                  stdin=io.StringIO())
    client = FakeClient()
    feed = iter(lines)

    def read(prompt: str) -> str:
        out.write(prompt)
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    repl = Repl(ctx, client, RunOptions(model="tiny", wordwrap=False, hide_thinking=hide_thinking),  # type: ignore[arg-type]
                {"model_info": {}, "details": {"family": "llama"}, "capabilities": ["completion"]}, read=read)
    assert repl.loop() == 0
    return repl, client, out.getvalue(), err.getvalue()


def test_conversation_keeps_history_and_system() -> None:
    repl, client, out, _ = session(["/set system Be brief.", "hello", "again", "/bye"])
    assert "Set system message." in out
    assert "Thinking...\nhmm\n...done thinking.\n\nreply 1\n" in out
    last = client.chats[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user"]
    assert last[0]["content"] == "Be brief." and last[2] == {"role": "assistant", "content": "reply 1",
                                                              "thinking": "hmm"}
    assert client.chats[0]["messages"] == []  # the preload


def test_multiline_clear_parameters_and_flags() -> None:
    repl, client, out, err = session([
        '"""first line', "second line", 'end"""', "/clear", "/set parameter temperature 0.2",
        "/set parameter stop <a> <b>", "/set parameter bogus 1", "/set format json", "/set think low",
        "/set verbose", "next",
    ], hide_thinking=True)
    assert client.chats[1]["messages"][0]["content"] == "first line\nsecond line\nend"
    assert "Cleared session context" in out
    body = client.chats[-1]
    assert body["options"] == {"temperature": 0.2, "stop": ["<a>", "<b>"]}
    assert body["format"] == "json" and body["think"] == "low"
    assert len(body["messages"]) == 1
    assert "Couldn't set parameter: unknown parameter 'bogus'" in out
    assert "eval rate:            3.00 tokens/s" in err


def test_help_show_save_list_and_unknown() -> None:
    repl, client, out, _ = session(["/?", "/show info", "/show template", "hi", "/save mine", "/list",
                                    "/frobnicate"])
    assert HELP in out
    assert "  Model\n    architecture    llama\n" in out
    assert "{{ .Prompt }}" in out
    assert client.created[0]["from"] == "tiny" and client.created[0]["model"] == "mine"
    assert client.created[0]["messages"][0] == {"role": "user", "content": "hi"}
    assert "Created new model 'mine'" in out and "tiny:latest" in out
    assert "Unknown command '/frobnicate'. Type /? for help" in out
