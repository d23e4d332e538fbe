"""What every command receives: settings, streams, and the ways to reach models."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, TextIO

from power.cli.private import PrivateServer, is_loopback
from power.client import Client, ServerUnreachable
from power.config import Settings, load_settings

if TYPE_CHECKING:  # the backends (and the store behind them) load when a command needs models
    from power.cli.backend import Models

__all__ = ["Context"]


@dataclass
class Context:
    """Settings and I/O for one CLI invocation; lazily finds the server."""

    settings: Settings = field(default_factory=load_settings)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    _client: Client | None = None
    _answers: bool | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.settings.base_url, api_key=self.settings.api_key)
        return self._client

    def server_answers(self) -> bool:
        if self._answers is None:
            self._answers = self.client.heartbeat()
        return self._answers

    @property
    def local_host(self) -> bool:
        return is_loopback(self.settings.host)

    def require_server(self) -> Client:
        """The client of a running server, or ServerUnreachable."""
        if not self.server_answers():
            raise ServerUnreachable()
        return self.client

    def models(self) -> Models:
        """The server when one answers; the local models folder when none does on this machine."""
        from power.cli.backend import LocalModels, RemoteModels

        if self.server_answers():
            return RemoteModels(self.client)
        if not self.local_host:
            raise ServerUnreachable()
        from power.store import ModelStore

        return LocalModels(ModelStore.from_settings(self.settings))

    @contextlib.contextmanager
    def inference(self) -> Iterator[Client]:
        """A client that can generate: the running server, or a private one started for this call."""
        if self.server_answers():
            yield self.client
            return
        if not self.local_host:
            raise ServerUnreachable()
        with PrivateServer(self.settings) as client:
            yield client

    @property
    def interactive_out(self) -> bool:
        return _isatty(self.out)

    @property
    def interactive_in(self) -> bool:
        return _isatty(self.stdin)

    @property
    def interactive_err(self) -> bool:
        return _isatty(self.err)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
