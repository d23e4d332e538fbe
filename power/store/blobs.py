"""Content-addressed blobs: ``blobs/sha256-<hex>``, written atomically while hashed.

A blob is written to a temporary file in the blob folder while its sha256 and
size are computed; the file is fsynced, the digest verified, then renamed to its
final name and the folder fsynced. A mismatch, a size cap, a full disk or any
error removes the temporary file, so a final name always holds exactly the
content it names. Two writers of one digest both rename identical bytes onto
one name, which leaves one file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from power.errors import DigestMismatch, InvalidDigest, NotFound, StoreError, StoreFull
from power.store.atomic import (
    TMP_PREFIX,
    fsync_dir,
    os_error,
    remove_dead_temps,
    writer_temp,
)

__all__ = [
    "BlobInfo", "BlobStore", "parse_digest", "digest_hex", "blob_filename",
    "sha256_digest", "DEFAULT_RESERVE",
]

log = logging.getLogger(__name__)

_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_CHUNK = 1 << 20
_DISK_CHECK_EVERY = 64 << 20
# Free space a blob write must leave on the disk, so a pull cannot fill it to the brim.
DEFAULT_RESERVE = 100 << 20


def parse_digest(text: object) -> str:
    """Return the canonical ``sha256:<lower hex>`` form, or raise InvalidDigest.

    Accepts ``sha256:<hex>`` and the file-name form ``sha256-<hex>``; anything
    else (wrong length, path separators, other algorithms) is refused, so a
    digest can be turned into a path only after this check.
    """
    if not isinstance(text, str):
        raise InvalidDigest()
    m = _DIGEST_RE.fullmatch(text)
    if m is None:
        raise InvalidDigest()
    return "sha256:" + m.group(1).lower()


def digest_hex(digest: str) -> str:
    """Return the 64 hex characters of a digest."""
    return parse_digest(digest)[7:]


def blob_filename(digest: str) -> str:
    return "sha256-" + digest_hex(digest)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BlobInfo:
    """The outcome of adding a blob: its digest, size and whether it was new."""

    digest: str
    size: int
    created: bool


class BlobStore:
    """The ``blobs`` folder of a model store."""

    def __init__(self, root: Path, *, max_size: int | None = None,
                 reserve: int = DEFAULT_RESERVE) -> None:
        self.root = Path(root)
        self.max_size = max_size
        self.reserve = reserve

    # -- lookup ---------------------------------------------------------------
    def path(self, digest: str) -> Path:
        """Return the file path of a (validated) digest; the file may not exist."""
        return self.root / blob_filename(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {parse_digest(digest)} not found") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {parse_digest(digest)} not found") from None

    def read_bytes(self, digest: str, limit: int = 16 << 20) -> bytes:
        """Read a small blob (config, template, params) whole, refusing more than ``limit``."""
        with self.open(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise StoreError(f"blob {parse_digest(digest)} is larger than {limit} bytes")
        return data

    def digests(self) -> set[str]:
        """Return the digest of every final blob file present."""
        out: set[str] = set()
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for entry in entries:
            m = _DIGEST_RE.fullmatch(entry.name)
            if m is not None and entry.name.startswith("sha256-"):
                out.add("sha256:" + m.group(1).lower())
        return out

    def touch(self, digest: str) -> None:
        """Refresh a blob's mtime (marks it as freshly used)."""
        try:
            os.utime(self.path(digest))
        except OSError:
            pass

    # -- writing --------------------------------------------------------------
    def add_bytes(self, data: bytes, expected: str | None = None) -> BlobInfo:
        return self.add_stream([data], expected)

    def add_file(self, path: Path, expected: str | None = None) -> BlobInfo:
        """Copy a file into the store (reading it once, hashing as it is copied)."""
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise StoreError(f"open {path}: {exc.strerror or exc}") from exc
        with f:
            return self.add_stream(f, expected)

    def add_stream(self, source: BinaryIO | Iterable[bytes], expected: str | None = None,
                   size_hint: int | None = None) -> BlobInfo:
        """Write a blob from a binary file object or an iterable of byte chunks.

        With ``expected`` the content must hash to it (else DigestMismatch and
        nothing is left behind); an existing blob of that digest is kept and the
        source is not read. Without it the digest is whatever the content hashes to.
        """
        if expected is not None:
            expected = parse_digest(expected)
            if self.exists(expected):
                self.touch(expected)
                return BlobInfo(expected, self.size(expected), False)
        self._check_space(size_hint or 0)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp, lock = writer_temp(self.root)  # locked: a prune can tell a live writer from a dead one
        except OSError as exc:
            raise os_error(exc, "create blob") from exc
        try:
            digest, size = self._copy_hashing(source, fd)
            if expected is not None and digest != expected:
                raise DigestMismatch(f"digest mismatch, expected \"{expected}\", got \"{digest}\"")
            final = self.path(digest)
            created = not final.exists()
            try:
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
            except OSError as exc:
                raise os_error(exc, "write blob") from exc
        except BaseException:  # the source's own errors (a client gone) pass through unchanged
            _unlink(tmp)
            raise
        finally:
            os.close(lock)
        fsync_dir(self.root)
        log.debug("blob written digest=%s size=%d created=%s", digest, size, created)
        return BlobInfo(digest, size, created)

    def temp_path(self, suffix: str = "") -> Path:
        """Reserve a temporary file in the blob folder (for tools that write a file, e.g. quantize)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=self.root)
        except OSError as exc:
            raise os_error(exc, "create blob") from exc
        os.close(fd)
        return Path(name)

    def adopt(self, path: Path) -> BlobInfo:
        """Hash a finished file in the blob folder and rename it to its digest, without copying."""
        if path.parent.resolve() != self.root.resolve():
            raise StoreError("only files in the blob folder can be adopted")
        h = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                os.fsync(f.fileno())
            digest = "sha256:" + h.hexdigest()
            final = self.path(digest)
            created = not final.exists()
            os.chmod(path, 0o644)
            os.replace(path, final)
        except OSError as exc:
            _unlink(path)
            raise os_error(exc, "write blob") from exc
        fsync_dir(self.root)
        return BlobInfo(digest, size, created)

    def _copy_hashing(self, source: BinaryIO | Iterable[bytes], fd: int) -> tuple[str, int]:
        h = hashlib.sha256()
        size = 0
        next_check = _DISK_CHECK_EVERY
        with os.fdopen(fd, "wb") as out:
            for chunk in _chunks(source):
                size += len(chunk)
                if self.max_size is not None and size > self.max_size:
                    raise StoreError(f"blob larger than the limit of {self.max_size} bytes")
                if size >= next_check:
                    self._check_space(0)
                    next_check = size + _DISK_CHECK_EVERY
                h.update(chunk)
                _write(out, chunk)
            _write(out, b"", sync=True)
        return "sha256:" + h.hexdigest(), size

    def _check_space(self, need: int) -> None:
        if self.reserve <= 0 and need <= 0:
            return
        probe = self.root if self.root.exists() else self.root.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            return
        if free - need < self.reserve:
            raise StoreFull("no space left on device: the disk reserve would be used")

    # -- removal --------------------------------------------------------------
    def delete(self, digest: str) -> bool:
        """Delete one blob; return whether it existed."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise os_error(exc, "delete blob") from exc
        return True

    def remove_stale_temps(self, max_age: float = 3600.0) -> int:
        """Remove temporary files of writers that died (kill -9), and any older than ``max_age`` seconds."""
        return remove_dead_temps(self.root, max_age)


def _chunks(source: BinaryIO | Iterable[bytes]) -> Iterable[bytes]:
    read = getattr(source, "read", None)
    if read is None:
        for chunk in source:
            if chunk:
                yield bytes(chunk)
        return
    while True:
        chunk = read(_CHUNK)
        if not chunk:
            return
        yield chunk


def _write(out: BinaryIO, chunk: bytes, sync: bool = False) -> None:
    try:
        if chunk:
            out.write(chunk)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise os_error(exc, "write blob") from exc


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
