"""Resumable, parallel, verified blob downloads into the store's blob folder.

Layout (Ollama's, so either tool resumes the other's download)::

    blobs/<key>-partial        the sparse data file, as long as the blob
    blobs/<key>-partial-<N>    JSON {"N", "Offset", "Size", "Completed"} per part
    blobs/<key>-partial.lock   held (flock) by the one process downloading it

Parts are fetched with ``Range`` by up to ``streams`` threads; a part that
fails or stalls (no byte for ``stall_timeout``) is retried from where it
stopped with exponential back-off. A server that answers a ranged request with
200 ignores ranges: the download restarts as one stream. A 416 or a changed
size or validator restarts cleanly. When every part is complete the file is
hashed and renamed to its digest by the store (``BlobStore.adopt``), and a
mismatch deletes it: a final name never holds other content (P1, P3, P4).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

from power.errors import Canceled, DigestMismatch, PowerError, RegistryError, StoreError
from power.registry.flight import FlightLock
from power.registry.transport import Refused, Response
from power.store.atomic import atomic_write_bytes, os_error
from power.store.blobs import BlobInfo, BlobStore, parse_digest

__all__ = ["DEFAULT_OPTIONS", "BlobSource", "Download", "TransferOptions"]

log = logging.getLogger(__name__)

_CHUNK = 256 << 10
_SAVE_EVERY = 1.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class TransferOptions:
    """Knobs of a transfer; tests shrink parts, timeouts and back-off."""

    streams: int = 4
    min_part: int = 100 << 20
    max_part: int = 1000 << 20
    stall_timeout: float = 30.0
    retries: int = 6
    backoff: float = 1.0
    upload_chunk: int = 100 << 20


DEFAULT_OPTIONS = TransferOptions()


class BlobSource(Protocol):
    """Where a blob's bytes come from: one GET, optionally for a byte range (inclusive)."""

    def get(self, first: int | None, last: int | None, read_timeout: float) -> Response: ...


class _NoRanges(Exception):
    """The server answered a ranged request with the whole body."""


class _Restart(Exception):
    """The saved state no longer fits the remote file (416, size or validator changed)."""


@dataclass
class _Part:
    n: int
    offset: int
    size: int
    completed: int = 0
    validator: str = ""

    def to_json(self) -> bytes:
        return json.dumps({"N": self.n, "Offset": self.offset, "Size": self.size,
                           "Completed": self.completed, "Validator": self.validator}).encode()


class Download:
    """Download one blob of known ``size`` (and ``digest`` when known) into ``blobs``."""

    def __init__(self, blobs: BlobStore, source: BlobSource, size: int, *, digest: str | None = None,
                 key: str | None = None, options: TransferOptions = DEFAULT_OPTIONS,
                 on_progress: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None, validator: str = "") -> None:
        self.blobs = blobs
        self.source = source
        self.size = size
        self.digest = parse_digest(digest) if digest else None
        self.key = key or ("sha256-" + self.digest[7:] if self.digest else "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", self.key):
            raise StoreError("invalid download key")
        self.options = options
        self.on_progress = on_progress or (lambda done: None)
        self.cancel = cancel or threading.Event()
        self.validator = validator
        self.partial = blobs.root / f"{self.key}-partial"
        self._lock = threading.Lock()
        self._halt = threading.Event()  # set when one part failed: the others stop
        self._parts: list[_Part] = []
        self._saved: dict[int, float] = {}

    # -- public -------------------------------------------------------------------
    def run(self) -> BlobInfo:
        """Download (or wait for another download of) the blob and return it once verified."""
        if self.digest and self.blobs.exists(self.digest):
            return BlobInfo(self.digest, self.blobs.size(self.digest), False)
        self.blobs.root.mkdir(parents=True, exist_ok=True)
        flight = FlightLock(self.blobs.root / f"{self.key}-partial.lock")
        flight.acquire(self.cancel, on_wait=self._report_others)
        try:
            if self.digest and self.blobs.exists(self.digest):
                self.on_progress(self.size)
                return BlobInfo(self.digest, self.size, False)
            return self._download()
        finally:
            flight.release()

    # -- the download ---------------------------------------------------------------
    def _download(self) -> BlobInfo:
        for attempt in range(3):
            loaded = self._load_parts()
            self._check_space(sum(p.size - p.completed for p in loaded) if loaded else self.size)
            self._parts = loaded or self._plan()
            try:
                self._fetch_parts()
                break
            except _Fatal:
                self._discard()
                raise
            except _NoRanges:
                log.info("server ignores Range; restarting as one stream key=%s", self.key)
                self._reset([_Part(0, 0, self.size, 0, self.validator)])
                self._fetch_parts(ranged=False)
                break
            except _Restart as exc:
                log.info("download state is stale (%s); restarting key=%s", exc, self.key)
                self._discard()
                if attempt == 2:
                    raise RegistryError(f"download keeps changing under us: {exc}") from None
        self._remove_state()
        try:
            info = self.blobs.adopt(self.partial)
        except PowerError:
            self._discard()
            raise
        if info.size != self.size or (self.digest and info.digest != self.digest):
            if info.created:
                self.blobs.delete(info.digest)
            if info.size != self.size:
                raise RegistryError(f"blob size mismatch: expected {self.size} bytes, got {info.size}")
            raise DigestMismatch(f"digest mismatch, expected \"{self.digest}\", got \"{info.digest}\"")
        return info

    def _plan(self) -> list[_Part]:
        part = min(max(self.size // 16, self.options.min_part), self.options.max_part)
        parts = [_Part(n, off, min(part, self.size - off), 0, self.validator)
                 for n, off in enumerate(range(0, self.size, max(part, 1)))]
        self._reset(parts or [_Part(0, 0, 0, 0, self.validator)])
        return self._parts

    def _reset(self, parts: list[_Part]) -> None:
        self._discard()
        try:
            with open(self.partial, "wb") as f:
                f.truncate(self.size)
        except OSError as exc:
            raise os_error(exc, "create partial blob") from exc
        self._parts = parts
        for part in parts:
            self._save(part, force=True)

    def _load_parts(self) -> list[_Part] | None:
        """Read saved part states; None (start over) unless they tile the blob exactly."""
        if not self.partial.is_file() or self.partial.stat().st_size != self.size:
            return None
        parts: list[_Part] = []
        for path in self.blobs.root.glob(f"{self.key}-partial-*"):
            try:
                obj = json.loads(path.read_bytes())
                part = _Part(int(obj["N"]), int(obj["Offset"]), int(obj["Size"]), int(obj["Completed"]),
                             str(obj.get("Validator", "")))
            except (OSError, ValueError, KeyError, TypeError):
                return None
            if not 0 <= part.completed <= part.size or part.validator != self.validator:
                return None
            parts.append(part)
        parts.sort(key=lambda p: p.offset)
        expect = 0
        for part in parts:
            if part.offset != expect:
                return None
            expect += part.size
        if not parts or expect != self.size:
            return None
        done = sum(p.completed for p in parts)
        log.info("resuming download key=%s completed=%d size=%d", self.key, done, self.size)
        self.on_progress(done)
        return parts

    def _check_space(self, need: int) -> None:
        try:
            free = shutil.disk_usage(self.blobs.root).free
        except OSError:
            return
        if free - need < self.blobs.reserve:
            raise StoreError(f"no space left on device: {need} bytes needed, {free} free "
                             f"(keeping {self.blobs.reserve} in reserve)")

    def _fetch_parts(self, ranged: bool = True) -> None:
        todo = [p for p in self._parts if p.completed < p.size]
        if not todo:
            return
        try:
            fd = os.open(self.partial, os.O_WRONLY)
        except OSError as exc:
            raise os_error(exc, "open partial blob") from exc
        try:
            workers = max(1, min(self.options.streams, len(todo)))
            with ThreadPoolExecutor(workers, thread_name_prefix="download") as pool:
                futures = [pool.submit(self._fetch_part, fd, p, ranged) for p in todo]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                if any(f.exception() for f in done):
                    self._halt.set()
                    errors = [f.exception() for f in futures if f.exception()]
                    raise _first(errors)  # type: ignore[arg-type]
        finally:
            os.close(fd)
            self._halt.clear()

    def _fetch_part(self, fd: int, part: _Part, ranged: bool) -> None:
        failures = 0
        while part.completed < part.size:
            self._check_halt()
            try:
                self._stream_part(fd, part, ranged)
            except (_NoRanges, _Restart, _Fatal, Refused, Canceled, StoreError):
                raise
            except RegistryError as exc:
                failures += 1
                if failures > self.options.retries:
                    raise
                delay = min(self.options.backoff * 2 ** (failures - 1), 30.0)
                log.info("part failed; retrying key=%s part=%d try=%d in=%.1fs error=%s",
                         self.key, part.n, failures, delay, exc)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    self._check_halt()
                    time.sleep(min(0.05, delay))
        self._save(part, force=True)

    def _stream_part(self, fd: int, part: _Part, ranged: bool) -> None:
        first = part.offset + part.completed
        last = part.offset + part.size - 1
        resp = self.source.get(first if ranged else None, last if ranged else None,
                               self.options.stall_timeout)
        with resp:
            self._check_answer(resp, first, last, ranged)
            while part.completed < part.size:
                self._check_halt()
                chunk = resp.read(min(_CHUNK, part.size - part.completed))
                if not chunk:
                    raise RegistryError(f"connection closed early at byte {part.offset + part.completed}")
                try:
                    os.pwrite(fd, chunk, part.offset + part.completed)
                except OSError as exc:
                    raise os_error(exc, "write partial blob") from exc
                with self._lock:
                    part.completed += len(chunk)
                    total = sum(p.completed for p in self._parts)
                self.on_progress(total)
                self._save(part)

    def _check_answer(self, resp: Response, first: int, last: int, ranged: bool) -> None:
        if resp.status == 416:
            raise _Restart("416 range not satisfiable")
        if resp.status >= 400:
            text = f"{resp.status}: {resp.error_text() or resp.reason}"
            if resp.status == 404:
                raise _Fatal("file does not exist")
            if resp.status < 500 and resp.status != 429:
                raise _Fatal(text)
            raise RegistryError(text)
        validator = resp.header("ETag")
        if self.validator and validator and validator != self.validator:
            raise _Restart("the remote file changed")
        if resp.status == 200:
            if ranged and first > 0 or ranged and last < self.size - 1:
                raise _NoRanges()
            length = resp.header("Content-Length")
            if length.isdigit() and int(length) != self.size:
                raise _Fatal(f"blob size mismatch: expected {self.size} bytes, server sends {length}")
            return
        if resp.status != 206:
            raise _Fatal(f"unexpected answer {resp.status} to a blob request")
        m = _CONTENT_RANGE.fullmatch(resp.header("Content-Range").strip())
        if m is None or int(m.group(1)) != first:
            raise _Fatal("bad Content-Range in a partial answer")
        if m.group(3) != "*" and int(m.group(3)) != self.size:
            raise _Fatal(f"blob size mismatch: expected {self.size} bytes, server has {m.group(3)}")

    def _check_halt(self) -> None:
        if self.cancel.is_set() or self._halt.is_set():
            raise Canceled()

    # -- state files ----------------------------------------------------------------
    def _save(self, part: _Part, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._saved.get(part.n, 0.0) < _SAVE_EVERY:
            return
        self._saved[part.n] = now
        with self._lock:
            data = part.to_json()
        atomic_write_bytes(self.blobs.root / f"{self.key}-partial-{part.n}", data)

    def _remove_state(self) -> None:
        for path in self.blobs.root.glob(f"{self.key}-partial-*"):
            try:
                path.unlink()
            except OSError:
                pass

    def _discard(self) -> None:
        self._remove_state()
        try:
            self.partial.unlink()
        except OSError:
            pass

    def _report_others(self) -> None:
        """While another process downloads this blob, report its progress from its state files."""
        done = 0
        for path in self.blobs.root.glob(f"{self.key}-partial-*"):
            try:
                done += int(json.loads(path.read_bytes()).get("Completed", 0))
            except (OSError, ValueError, TypeError, AttributeError):
                continue
        self.on_progress(min(done, self.size))


class _Fatal(RegistryError):
    """A failure that retrying cannot fix (4xx, a size that disagrees)."""


def _first(errors: list[BaseException]) -> BaseException:
    for exc in errors:
        if not isinstance(exc, Canceled):
            return exc
    return errors[0]
