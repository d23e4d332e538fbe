"""The interactive session of ``run``: ``>>> `` prompts, slash commands, multi-line input.

The conversation is kept here and sent whole to ``/api/chat`` each turn, so the
server's prefix cache makes earlier turns free. ``read`` is injectable so tests
can script a session without a terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from power.cli.context import Context
from power.cli.images import extract_images
from power.cli.render import list_rows, metrics_summary, table
from power.cli.run import AnswerPrinter, RunOptions, ensure_model, load_view, stream_answer
from power.cli.show import render_field, render_show
from power.client import Client
from power.errors import InvalidRequest, PowerError
from power.store.params import parse_parameter

__all__ = ["Repl", "HELP", "HELP_SET", "HELP_SHOW", "HELP_SHORTCUTS"]

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /list           List local models
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""
HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
"""
HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""
HELP_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor
  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit (/bye)
"""
_FLAGS = {
    "wordwrap": ("wordwrap", True), "nowordwrap": ("wordwrap", False),
    "verbose": ("verbose", True), "quiet": ("verbose", False),
    "nothink": ("think", False), "history": ("history", True), "nohistory": ("history", False),
}


def _readline(path: Path) -> Callable[[], None] | None:
    """Line editing and persistent history for ``input()``; the saver, or None without readline."""
    try:
        import readline
    except ImportError:
        return None
    try:
        readline.read_history_file(path)
    except OSError:
        pass

    def save() -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError:
            pass

    return save


class _Exit(Exception):
    """Raised by /bye."""


class Repl:
    """One interactive session with one (switchable) model."""

    def __init__(self, ctx: Context, client: Client, opts: RunOptions, info: dict[str, Any], *,
                 read: Callable[[str], str] = input) -> None:
        self.ctx = ctx
        self.client = client
        self.opts = opts
        self.info = info
        self.read = read
        self.messages: list[dict[str, Any]] = []
        self.history = True

    def say(self, text: str = "") -> None:
        self.ctx.out.write(text if text.endswith("\n") or not text else text + "\n")
        self.ctx.out.flush()

    # -- input ---------------------------------------------------------------------
    def read_message(self) -> str:
        """One message: a line, or a ``\"\"\"``-fenced block over several lines."""
        line = self.read(">>> ")
        if not line.lstrip().startswith('"""'):
            return line
        body = line.lstrip()[3:]
        if body.endswith('"""'):
            return body[:-3]
        lines = [body] if body else []
        while True:
            nxt = self.read("... ")
            if nxt.rstrip().endswith('"""'):
                lines.append(nxt.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(nxt)

    def loop(self) -> int:
        self._preload()
        save_history = _readline(self.ctx.settings.home / "history") if self.ctx.interactive_in else None
        try:
            return self._loop()
        finally:
            if save_history is not None and self.history:
                save_history()

    def _loop(self) -> int:
        while True:
            try:
                line = self.read_message()
            except EOFError:
                self.say()
                return 0
            except KeyboardInterrupt:
                self.say("\nUse Ctrl + d or /bye to exit.")
                continue
            try:
                if line.startswith("/"):
                    self.command(line)
                elif line.strip():
                    self.ask(line)
            except _Exit:
                return 0
            except PowerError as exc:
                self.ctx.err.write(f"Error: {exc}\n")
                self.ctx.err.flush()

    def _preload(self) -> None:
        body = self.opts.request(messages=[])
        view = load_view(self.ctx)
        for status in self.client.chat(body):
            if status.get("status") == "loading model":
                view.update(status)
        if view.lines:
            view.close()

    # -- chatting ------------------------------------------------------------------
    def chat_messages(self) -> list[dict[str, Any]]:
        system = [{"role": "system", "content": self.opts.system}] if self.opts.system else []
        return system + self.messages

    def ask(self, text: str) -> None:
        message: dict[str, Any] = {"role": "user", "content": text}
        if "vision" in (self.info.get("capabilities") or []):
            message["content"], images = extract_images(text, err=self.ctx.err)
            if images:
                message["images"] = images
        self.messages.append(message)
        printer = AnswerPrinter(self.ctx.out, tty=self.ctx.interactive_out, wordwrap=self.opts.wordwrap,
                                hide_thinking=self.opts.hide_thinking, progress=load_view(self.ctx))
        try:
            content, thinking, final = stream_answer(
                self.client.chat(self.opts.request(messages=self.chat_messages())), printer)
        except KeyboardInterrupt:
            self.messages.pop()
            self.say()
            return
        except PowerError:
            self.messages.pop()
            raise
        reply: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            reply["thinking"] = thinking
        self.messages.append(reply)
        self.say()
        if self.opts.verbose:
            self.ctx.err.write(metrics_summary(final) + "\n")
            self.ctx.err.flush()

    # -- slash commands ------------------------------------------------------------
    def command(self, line: str) -> None:
        words = line.split()
        cmd, rest = words[0].lower(), words[1:]
        if cmd in ("/bye", "/exit"):
            raise _Exit()
        if cmd in ("/?", "/help"):
            topic = rest[0].lower() if rest else ""
            self.say({"set": HELP_SET, "show": HELP_SHOW, "shortcuts": HELP_SHORTCUTS}.get(topic, HELP))
        elif cmd == "/clear":
            self.messages.clear()
            self.say("Cleared session context")
        elif cmd == "/set":
            self.set(rest, line)
        elif cmd == "/show":
            self.show(rest[0].lower() if rest else "")
        elif cmd == "/load" and rest:
            self.load(rest[0])
        elif cmd == "/save" and rest:
            self.save(rest[0])
        elif cmd == "/list":
            self.ctx.out.write(table(["NAME", "ID", "SIZE", "MODIFIED"], list_rows(self.client.tags())))
        else:
            self.say(f"Unknown command '{words[0]}'. Type /? for help")

    def set(self, rest: list[str], line: str) -> None:
        if not rest:
            self.say(HELP_SET)
            return
        what = rest[0].lower()
        if what == "parameter":
            self._set_parameter(rest[1:])
        elif what == "system":
            text = line.split(None, 2)[2] if len(rest) > 1 else ""
            self.opts.system = text.strip().strip('"') or None
            self.say("Set system message.")
        elif what == "format" and rest[1:2] == ["json"]:
            self.opts.format = "json"
            self.say("Set format to 'json' mode.")
        elif what == "noformat":
            self.opts.format = ""
            self.say("Disabled format.")
        elif what == "think":
            level = rest[1].lower() if len(rest) > 1 else "true"
            self.opts.think = True if level == "true" else level
            self.opts.hide_thinking = False
            self.say("Set 'think' mode.")
        elif what in _FLAGS:
            attr, value = _FLAGS[what]
            target = self if attr == "history" else self.opts
            setattr(target, attr, value)
            self.say(f"Set '{what}' mode.")
        else:
            self.say(f"Unknown command '/set {rest[0]}'. Type /? for help")

    def _set_parameter(self, args: list[str]) -> None:
        if len(args) < 2:
            self.say("Usage:\n  /set parameter <name> <value>")
            return
        name, values = args[0], args[1:]
        try:
            if name == "stop":
                self.opts.options["stop"] = values
            else:
                self.opts.options[name] = parse_parameter(name, " ".join(values))
        except InvalidRequest as exc:
            self.say(f"Couldn't set parameter: {exc}")
            return
        self.say(f"Set parameter '{name}' to '{', '.join(values)}'")

    def show(self, what: str) -> None:
        if what == "info":
            self.say(render_show(self.info))
        elif what == "system" and self.opts.system:
            self.say(self.opts.system)
        elif what == "parameters" and self.opts.options:
            text = render_field(self.info, "parameters")
            user = "".join(f"{k:<30} {v}\n" for k, v in self.opts.options.items())
            self.say(f"Model defined parameters:\n{text}\nUser defined parameters:\n{user}")
        elif what in ("license", "modelfile", "parameters", "system", "template"):
            self.say(render_field(self.client.show(self.opts.model), what))
        else:
            self.say(HELP_SHOW)

    def load(self, model: str) -> None:
        self.say(f"Loading model '{model}'")
        self.info = ensure_model(self.ctx, self.client, model, self.opts.insecure)
        self.opts.model = model
        self.messages.clear()
        self._preload()

    def save(self, model: str) -> None:
        body: dict[str, Any] = {"model": model, "from": self.opts.model}
        if self.opts.system:
            body["system"] = self.opts.system
        if self.opts.options:
            body["parameters"] = dict(self.opts.options)
        if self.messages:
            body["messages"] = [{"role": m["role"], "content": m["content"]} for m in self.messages]
        for _ in self.client.create(body):
            pass
        self.say(f"Created new model '{model}'")
