"""Render Ollama's Go templates in a sandbox, and read facts out of them.

``GoTemplate(source)`` parses once (cached by text); ``render(data)`` walks the
tree with a ``Budget`` so that no template runs long or writes much, whatever
it says. Templates can only read the data they are given and call the
functions in ``gofuncs.FUNCS``: there is nothing else to reach.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from power.errors import TemplateError
from power.prompt.go.funcs import FUNCS, field_of, go_str, truth
from power.prompt.go.parse import parse
from power.prompt.go.tree import (
    Action,
    Arg,
    Branch,
    Break,
    Chain,
    Command,
    Continue,
    Field,
    Ident,
    Literal,
    Node,
    Pipe,
    SubPipe,
    TemplateCall,
    Text,
    Tree,
    Variable,
)
from power.prompt.limits import DEFAULT_LIMITS, Budget, Limits

__all__ = ["GoTemplate", "parse_template"]


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Cut(Exception):
    """Raised at ``{{ .Response }}`` when rendering the last legacy turn."""


class _Run:
    def __init__(self, tree: Tree, budget: Budget, cut_at_response: bool) -> None:
        self.tree = tree
        self.budget = budget
        self.cut_at_response = cut_at_response
        self.out: list[str] = []
        self.vars: list[tuple[str, Any]] = []
        self.depth = 0

    # -- statements --
    def walk(self, dot: Any, nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            self.budget.tick()
            if isinstance(node, Text):
                self.write(node.text)
            elif isinstance(node, Action):
                if self.cut_at_response and _mentions(node.pipe, "Response"):
                    raise _Cut()
                value = self.pipe(dot, node.pipe)
                if not node.pipe.decl:
                    self.write(go_str(value))
            elif isinstance(node, Branch):
                self.branch(dot, node)
            elif isinstance(node, TemplateCall):
                self.call_template(dot, node)
            elif isinstance(node, Break):
                raise _Break()
            elif isinstance(node, Continue):
                raise _Continue()

    def write(self, text: str) -> None:
        if text:
            self.budget.emit(len(text))
            self.out.append(text)

    def branch(self, dot: Any, node: Branch) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range(dot, node, mark)
                return
            value = self.pipe(dot, node.pipe)
            if truth(value):
                self.walk(value if node.kind == "with" else dot, node.body)
            elif node.orelse is not None:
                self.walk(dot, node.orelse)
        finally:
            del self.vars[mark:]

    def range(self, dot: Any, node: Branch, mark: int) -> None:
        value = self.pipe(dot, Pipe((), False, node.pipe.cmds))
        decl = node.pipe.decl
        empty = True
        for key, item in _iterate(value):
            self.budget.tick()
            empty = False
            del self.vars[mark:]
            if len(decl) == 1:
                self.vars.append((decl[0], key if isinstance(value, int) else item))
            elif len(decl) == 2:
                self.vars.extend(((decl[0], key), (decl[1], item)))
            try:
                self.walk(item, node.body)
            except _Break:
                break
            except _Continue:
                continue
        if empty and node.orelse is not None:
            del self.vars[mark:]
            self.walk(dot, node.orelse)

    def call_template(self, dot: Any, node: TemplateCall) -> None:
        body = self.tree.define(node.name)
        if body is None:
            raise TemplateError(f"template: line {node.line}: no such template {node.name!r}")
        value = self.pipe(dot, node.pipe) if node.pipe is not None else None
        self.depth += 1
        if self.depth > self.budget.limits.max_depth:
            raise TemplateError("template: exceeded maximum template depth")
        saved, self.vars = self.vars, [("$", value)]
        try:
            self.walk(value, body)
        finally:
            self.vars = saved
            self.depth -= 1

    # -- expressions --
    def pipe(self, dot: Any, pipe: Pipe) -> Any:
        value: Any = None
        for i, cmd in enumerate(pipe.cmds):
            value = self.command(dot, cmd, value, piped=i > 0)
        if pipe.decl:
            name = pipe.decl[0]
            if pipe.assign:
                for k in range(len(self.vars) - 1, -1, -1):
                    if self.vars[k][0] == name:
                        self.vars[k] = (name, value)
                        break
                else:
                    raise TemplateError(f"undefined variable: {name}")
            else:
                self.vars.append((name, value))
        return value

    def command(self, dot: Any, cmd: Command, piped_value: Any, piped: bool) -> Any:
        self.budget.tick()
        first, rest = cmd.args[0], cmd.args[1:]
        if isinstance(first, Ident):
            return self.call(dot, first.name, rest, piped_value, piped)
        if rest or piped:
            raise TemplateError("can't give argument to non-function")
        return self.arg(dot, first)

    def call(self, dot: Any, name: str, rest: tuple[Arg, ...], piped_value: Any, piped: bool) -> Any:
        if name in ("and", "or"):
            thunks: list[Callable[[], Any]] = [functools.partial(self.arg, dot, a) for a in rest]
            if piped:
                thunks.append(lambda: piped_value)
            if not thunks:
                raise TemplateError(f"wrong number of args for {name}")
            value: Any = None
            for thunk in thunks:
                value = thunk()
                if truth(value) != (name == "and"):
                    break
            return value
        func = FUNCS.get(name)
        if func is None:
            raise TemplateError(f'function "{name}" not defined')
        args = [self.arg(dot, a) for a in rest]
        if piped:
            args.append(piped_value)
        try:
            return func(*args)
        except TypeError as exc:
            raise TemplateError(f"wrong number of args for {name}") from exc
        except (IndexError, ValueError, OverflowError, RecursionError) as exc:
            raise TemplateError(f"error calling {name}: {exc}") from exc

    def arg(self, dot: Any, node: Arg) -> Any:
        if isinstance(node, Field):
            return _chain(dot, node.names)
        if isinstance(node, Variable):
            for name, value in reversed(self.vars):
                if name == node.name:
                    return _chain(value, node.names)
            raise TemplateError(f"undefined variable: {node.name}")
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, SubPipe):
            return self.pipe(dot, node.pipe)
        if isinstance(node, Chain):
            return _chain(self.pipe(dot, node.node.pipe), node.names)
        return self.call(dot, node.name, (), None, False)


def _chain(value: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = field_of(value, name)
    return value


def _iterate(value: Any) -> Iterator[tuple[Any, Any]]:
    if value is None:
        return iter(())
    if isinstance(value, (list, tuple)):
        return enumerate(value)
    if isinstance(value, dict):
        return iter(value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return ((i, i) for i in range(value))
    raise TemplateError(f"range can't iterate over {go_str(value)[:40]}")


def _mentions(pipe: Pipe, name: str) -> bool:
    return any(name in names for names in _pipe_fields(pipe))


def _pipe_fields(pipe: Pipe) -> Iterator[tuple[str, ...]]:
    for cmd in pipe.cmds:
        for arg in cmd.args:
            if isinstance(arg, (Field, Variable)):
                yield arg.names
            elif isinstance(arg, SubPipe):
                yield from _pipe_fields(arg.pipe)
            elif isinstance(arg, Chain):
                yield arg.names
                yield from _pipe_fields(arg.node.pipe)


def _nodes(nodes: tuple[Node, ...]) -> Iterator[Node]:
    for node in nodes:
        yield node
        if isinstance(node, Branch):
            yield from _nodes(node.body)
            yield from _nodes(node.orelse or ())


class GoTemplate:
    """A parsed Ollama Go template."""

    def __init__(self, source: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.source = source
        self.limits = limits
        self.tree = parse(source, limits)

    def _all_nodes(self) -> Iterator[Node]:
        yield from _nodes(self.tree.root)
        for _, body in self.tree.defines:
            yield from _nodes(body)

    @functools.cached_property
    def vars(self) -> frozenset[str]:
        """Every field name the template reads (``.Messages`` → ``Messages``)."""
        found: set[str] = set()
        for node in self._all_nodes():
            pipes = [node.pipe] if isinstance(node, (Action, Branch)) else []
            if isinstance(node, TemplateCall) and node.pipe is not None:
                pipes.append(node.pipe)
            for pipe in pipes:
                for names in _pipe_fields(pipe):
                    found.update(names)
        return frozenset(found)

    def uses(self, name: str) -> bool:
        return name in self.vars

    def render(self, data: dict[str, Any], *, cut_at_response: bool = False,
               budget: Budget | None = None) -> str:
        """Execute with ``data`` as dot; with ``cut_at_response`` stop at ``{{ .Response }}``."""
        run = _Run(self.tree, budget or Budget(self.limits), cut_at_response)
        run.vars.append(("$", data))
        try:
            run.walk(data, self.tree.root)
        except _Cut:
            pass
        except (_Break, _Continue) as exc:
            raise TemplateError("break or continue outside range") from exc
        except RecursionError as exc:
            raise TemplateError("template nesting too deep") from exc
        return "".join(run.out)

    def branches_on(self, name: str) -> Iterator[Branch]:
        """Every ``if``/``with`` whose condition reads the field ``name``."""
        for node in self._all_nodes():
            if isinstance(node, Branch) and node.kind != "range" and _mentions(node.pipe, name):
                yield node

    def text_around(self, name: str) -> Iterator[tuple[str, str]]:
        """For each ``{{ .name }}`` action, the literal text just before and after it."""
        lists: list[tuple[Node, ...]] = [self.tree.root]
        lists += [body for _, body in self.tree.defines]
        for node in self._all_nodes():
            if isinstance(node, Branch):
                lists.append(node.body)
                if node.orelse:
                    lists.append(node.orelse)
        for nodes in lists:
            for k, node in enumerate(nodes):
                if isinstance(node, Action) and _is_field(node.pipe, name):
                    before = nodes[k - 1] if k else None
                    after = nodes[k + 1] if k + 1 < len(nodes) else None
                    yield (before.text if isinstance(before, Text) else "",
                           after.text if isinstance(after, Text) else "")

    def first_text_in(self, nodes: tuple[Node, ...]) -> str | None:
        """The first non-blank literal text, depth first, inside ``nodes``."""
        for node in _nodes(nodes):
            if isinstance(node, Text) and node.text.strip():
                return node.text
        return None


def _is_field(pipe: Pipe, name: str) -> bool:
    if len(pipe.cmds) != 1 or len(pipe.cmds[0].args) != 1:
        return False
    arg = pipe.cmds[0].args[0]
    return isinstance(arg, Field) and arg.names[-1:] == (name,)


@functools.lru_cache(maxsize=128)
def parse_template(source: str) -> GoTemplate:
    """Parse (and cache) a Go template with the default limits."""
    return GoTemplate(source)
