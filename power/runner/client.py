"""The server's side of the runners: one uvloop thread multiplexing every runner socket and timer.

``LoopThread`` runs the event loop and lets any server thread call into it.
``RunnerProcess`` spawns one runner (from the loop thread, so that the
kernel's parent-death signal is tied to a thread that lives as long as the
server) and speaks the frame protocol with it; requests are routed to their
sinks by id. When the runner's socket closes, every request it was serving
fails with ``RunnerCrashed`` unless the server itself asked it to stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import uvloop

from power import python_command
from power.engine.options import LoadOptions
from power.errors import PowerError
from power.runner.protocol import FrameDecoder, ProtocolError, RunnerCrashed, encode, error_from_wire
from power.runner.stream import Sink

__all__ = ["LoopThread", "RunnerProcess", "VocabProcess"]

log = logging.getLogger(__name__)
T = TypeVar("T")
REAP_GRACE_S = 2.0  # how long a runner that closed its socket may take to exit before it is killed


class LoopThread:
    """A uvloop event loop on a daemon thread, callable from any other thread."""

    def __init__(self, name: str = "power-runners") -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (from a thread other than the loop's)."""
        if self.in_loop():
            coro.close()
            raise RuntimeError("LoopThread.call from the loop thread would deadlock")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop; its future, to wait for as long as the caller likes."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def spawn(self, coro: Coroutine[Any, Any, Any], on_error: Callable[[BaseException], None]) -> None:
        """Run ``coro`` on the loop without waiting for it; ``on_error`` gets what it raises (in the loop)."""
        async def run() -> None:
            try:
                await coro
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's sink, never lost
                on_error(exc)
                if not isinstance(exc, Exception):
                    raise
        asyncio.run_coroutine_threadsafe(run(), self.loop)

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop as soon as possible; returns at once."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


class RunnerProcess(asyncio.Protocol):
    """One runner process and its socket; every method runs in the loop thread."""

    def __init__(self, model_path: str, load: LoadOptions, adapters: Sequence[tuple[str, float]] = (),
                 *, projector: str | None = None, draft: str | None = None, log_level: str = "WARNING", cache_ram: int = 0,
                 cache_disk: tuple[str, int] | None = None, rpc_servers: Sequence[str] = (),
                 on_exit: Callable[[RunnerProcess], None] | None = None,
                 on_progress: Callable[[float], None] | None = None, load_pause: float = 0.0) -> None:
        """``on_progress`` gets the fraction of the weights loaded, as the runner reports it (each percent);
        ``load_pause`` makes the runner sleep that long at each report (a slow load, for tests)."""
        self.model_path = model_path
        self.on_progress = on_progress
        self.load_pause = load_pause
        self.cache_ram = cache_ram
        self.cache_disk = cache_disk
        self.rpc_servers = tuple(rpc_servers)
        self.load = load
        self.adapters = list(adapters)
        self.projector = projector
        self.draft = draft
        self.log_level = log_level
        self.on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.stopping = False
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder()
        self._sinks: dict[int, Sink] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._gone: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def in_flight(self) -> int:
        return len(self._sinks)

    async def start(self, timeout: float | None = None) -> dict[str, Any]:
        """Spawn the runner, wait until its model is loaded, and return what it reports about it."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._gone = loop.create_future()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(self.command(theirs.fileno()), pass_fds=(theirs.fileno(),),
                                         stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        log.info("runner started pid=%d model=%s", self.proc.pid, self.model_path)
        ours.setblocking(False)
        await loop.create_unix_connection(lambda: self, sock=ours)
        try:
            self.info = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self.kill()
            raise PowerError(f"timed out waiting for the model to load ({self.model_path})") from None
        except BaseException:
            self.kill()
            raise
        return self.info

    def command(self, fd: int) -> list[str]:
        """The runner's argv, serving the socket it inherits as ``fd``."""
        cmd = [*python_command("power.runner"), "--fd", str(fd), "--model", self.model_path,
               "--load", json.dumps(asdict(self.load)), "--adapters", json.dumps(self.adapters),
               "--parent", str(os.getpid()), "--log-level", self.log_level, "--cache-ram", str(self.cache_ram)]
        if self.projector:
            cmd += ["--projector", self.projector]
        if self.draft:
            cmd += ["--draft", self.draft]
        if self.cache_disk:
            cmd += ["--cache-dir", self.cache_disk[0], "--cache-disk", str(self.cache_disk[1])]
        if self.rpc_servers:
            cmd += ["--rpc", ",".join(self.rpc_servers)]
        if self.load_pause > 0:
            cmd += ["--load-pause", str(self.load_pause)]
        return cmd

    # ---- protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            msgs = self._decoder.feed(data)
        except ProtocolError as exc:
            log.error("runner pid=%d sent garbage: %s", self.pid, exc)
            self.kill()
            return
        for msg in msgs:
            rid = msg.get("id")
            if rid is None:
                self._control(msg)
                continue
            sink = self._sinks.get(rid)
            if sink is not None and sink.feed(msg):
                self._sinks.pop(rid, None)

    def _control(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "exiting":  # its engine is gone: the frames still to come are its requests' errors
            log.error("runner pid=%d is exiting: %s", self.pid, error_from_wire(msg.get("error")))
            self.closed = True
            return
        if self._ready is None or self._ready.done():
            return
        if op == "progress":
            value = msg.get("progress")
            if self.on_progress is not None and isinstance(value, (int, float)):
                self.on_progress(min(1.0, max(0.0, float(value))))
        elif op == "ready":
            self._ready.set_result(msg.get("info") or {})
        elif op == "failed":
            self._ready.set_exception(error_from_wire(msg.get("error")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        proc, loop = self.proc, asyncio.get_running_loop()
        status = None
        if proc is not None:
            try:
                status = await asyncio.wait_for(loop.run_in_executor(None, proc.wait),
                                                None if self.stopping else REAP_GRACE_S)
            except TimeoutError:  # it hung up on us but lives on: its requests must not wait for it
                log.error("runner pid=%d hung up but did not exit, killing it", self.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                status = await loop.run_in_executor(None, proc.wait)
        if self.stopping:
            err: PowerError = RunnerCrashed("model was unloaded")
        else:
            how = f"signal {-status}" if status is not None and status < 0 else f"exit status {status}"
            log.error("runner died pid=%d model=%s %s", self.pid, self.model_path, how)
            err = RunnerCrashed(f"model runner has unexpectedly stopped ({how}), this may be due to "
                                "resource limitations or an internal error")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(err)
        sinks, self._sinks = self._sinks, {}
        for sink in sinks.values():
            sink.fail(err)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        if self.on_exit is not None:
            self.on_exit(self)

    # ---- requests --------------------------------------------------------------------------------
    def send(self, op: str, sink: Sink | None = None, **fields: Any) -> int:
        """Send a request; its answers go to ``sink``. Fails the sink at once if the runner is gone."""
        return self.send_choices(op, [sink], **fields)[0]

    def send_choices(self, op: str, sinks: Sequence[Sink | None], **fields: Any) -> list[int]:
        """Send one request answered under an id per sink (the choices of a prompt); returns the ids."""
        ids = [next(self._ids) for _ in sinks]
        if self.closed or self._transport is None or self._transport.is_closing():
            for sink in sinks:
                if sink is not None:
                    sink.fail(RunnerCrashed("model runner is not running"))
            return ids
        for rid, sink in zip(ids, sinks):
            if sink is not None:
                self._sinks[rid] = sink
        if len(ids) > 1:
            fields["ids"] = ids
        self._transport.write(encode({"op": op, "id": ids[0], **fields}))
        return ids

    def cancel(self, rid: int, reason: str = "cancel") -> None:
        if rid in self._sinks:
            self._write({"op": "cancel", "id": rid, "reason": reason})

    def fail_all(self, exc: BaseException) -> None:
        """End every request of this runner here and now, with ``exc``."""
        sinks, self._sinks = self._sinks, {}
        for sink in sinks.values():
            sink.fail(exc)

    def _write(self, msg: dict[str, Any]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode(msg))

    async def stop(self, reason: str = "unload", timeout: float = 10.0) -> None:
        """Ask the runner to end its requests with ``reason`` and exit; kill it if it takes too long."""
        self.stopping = True
        if self.closed:  # its socket is gone, so it cannot hear the request: don't wait out the timeout
            self.kill()
        self._write({"op": "shutdown", "reason": reason})
        await self.wait_gone(timeout)

    async def wait_gone(self, timeout: float = 10.0) -> None:
        if self._gone is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), timeout)
        except TimeoutError:
            log.warning("runner did not stop in time, killing pid=%d", self.pid)
            self.kill()
            await asyncio.wait_for(asyncio.shield(self._gone), 5.0)

    def kill(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._transport is not None:
            self._transport.close()


class VocabProcess(RunnerProcess):
    """The vocab runner (``power.runner.vocabproc``): tokenizing for any model file, from its vocabulary only."""

    def __init__(self, *, log_level: str = "WARNING", capacity: int = 8) -> None:
        super().__init__("<vocab runner>", LoadOptions(), log_level=log_level)
        self.capacity = capacity

    def command(self, fd: int) -> list[str]:
        return [*python_command("power.runner.vocabproc"), "--fd", str(fd), "--parent", str(os.getpid()),
                "--capacity", str(self.capacity), "--log-level", self.log_level]


async def gather_quietly(aws: Sequence[Awaitable[Any]]) -> None:
    """Await all, logging (not raising) their failures."""
    for res in await asyncio.gather(*aws, return_exceptions=True):
        if isinstance(res, BaseException):
            log.warning("runner shutdown step failed: %s", res)
