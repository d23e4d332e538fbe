"""The models folder, laid out exactly as Ollama lays it out.

::

    <models>/manifests/<host>/<namespace>/<model>/<tag>   Docker v2 manifest JSON
    <models>/blobs/sha256-<hex>                           content-addressed blobs

Names are validated (``power.names``) and digests parsed (``blobs.parse_digest``)
before any path is built. Manifests are written last, atomically, and only
when every blob they name is present (P2).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from power.errors import InvalidName, ManifestError, ModelNotFound, StoreError
from power.names import ModelName, parse_name
from power.store.atomic import TMP_PREFIX, atomic_write_bytes, os_error
from power.store.blobs import BlobStore, sha256_digest
from power.store.manifest import Manifest

__all__ = ["Layout", "StoredManifest", "TreeState"]

log = logging.getLogger(__name__)

TreeState = tuple[tuple[str, "tuple[int, ...] | None"], ...]

_MAX_MANIFEST = 4 << 20


@dataclass(frozen=True)
class StoredManifest:
    """A manifest as found on disk: its name, parsed form, digest and mtime."""

    name: ModelName
    manifest: Manifest
    digest: str  # sha256:<hex> of the manifest file bytes (the model ID)
    modified_at: datetime
    raw: bytes


class Layout:
    """Paths and manifest I/O of one models folder."""

    def __init__(self, root: Path, blobs: BlobStore | None = None) -> None:
        self.root = Path(root)
        self.manifests_dir = self.root / "manifests"
        self.blobs = blobs or BlobStore(self.root / "blobs")

    # -- names ----------------------------------------------------------------
    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir / name.manifest_relpath()

    def canonical(self, name: ModelName | str) -> ModelName:
        """Adopt the casing of existing folders part by part; new parts keep the user's casing."""
        name = parse_name(name) if isinstance(name, str) else name
        parts: list[str] = []
        folder = self.manifests_dir
        for part in name.parts:
            match = _find_casefold(folder, part)
            parts.append(match if match is not None else part)
            if match is None:
                parts.extend(name.parts[len(parts):])
                break
            folder = folder / match
        return name.with_parts(*parts)

    def resolve(self, name: ModelName | str) -> ModelName | None:
        """Return the stored name matching ``name`` case-insensitively, or None."""
        canon = self.canonical(name)
        return canon if self.manifest_path(canon).is_file() else None

    def require(self, name: ModelName | str) -> ModelName:
        """Resolve a name that must exist, raising ModelNotFound with the user's spelling."""
        parsed = parse_name(name) if isinstance(name, str) else name
        found = self.resolve(parsed)
        if found is None:
            raise ModelNotFound(parsed.display())
        return found

    # -- manifests ------------------------------------------------------------
    def read(self, name: ModelName | str) -> StoredManifest:
        found = self.require(name)
        return self._read_path(found, self.manifest_path(found))

    def _read_path(self, name: ModelName, path: Path) -> StoredManifest:
        try:
            with open(path, "rb") as f:
                raw = f.read(_MAX_MANIFEST + 1)
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            raise ModelNotFound(name.display()) from None
        except OSError as exc:
            raise os_error(exc, f"read manifest {name.display()}") from exc
        if len(raw) > _MAX_MANIFEST:
            raise ManifestError(f"manifest of {name.display()} is too large")
        manifest = Manifest.from_bytes(raw)
        modified = datetime.fromtimestamp(mtime, tz=timezone.utc).astimezone()
        return StoredManifest(name, manifest, sha256_digest(raw), modified, raw)

    def write(self, name: ModelName, manifest: Manifest | bytes) -> StoredManifest:
        """Write a manifest atomically after checking that every blob it names exists.

        Bytes are written verbatim (a pulled manifest keeps its registry digest).
        """
        raw = manifest if isinstance(manifest, bytes) else manifest.to_bytes()
        parsed = Manifest.from_bytes(raw)
        missing = sorted(d for d in parsed.digests() if not self.blobs.exists(d))
        if missing:
            raise StoreError(f"manifest names missing blob {missing[0]}")
        path = self.manifest_path(name)
        if path.is_dir():
            raise StoreError(f"{name.display()}: a folder is in the way of the manifest")
        atomic_write_bytes(path, raw)
        return self._read_path(name, path)

    def remove(self, name: ModelName) -> None:
        """Delete a manifest file and the folders it leaves empty."""
        path = self.manifest_path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise ModelNotFound(name.display()) from None
        except OSError as exc:
            raise os_error(exc, f"delete {name.display()}") from exc
        self._prune_empty(path.parent)

    def _prune_empty(self, folder: Path) -> None:
        while folder != self.manifests_dir and self.manifests_dir in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def names(self) -> Iterator[tuple[ModelName, Path]]:
        """Yield every manifest path exactly four levels deep whose parts form a valid name."""
        for host in _subdirs(self.manifests_dir):
            for ns in _subdirs(host):
                for model in _subdirs(ns):
                    try:
                        tags = list(os.scandir(model))
                    except OSError:
                        continue
                    for tag in tags:
                        if tag.name.startswith(TMP_PREFIX) or not tag.is_file():
                            continue
                        try:
                            name = ModelName(host.name, ns.name, model.name, tag.name)
                        except InvalidName:
                            log.warning("skipping manifest with an invalid name path=%s", tag.path)
                            continue
                        yield name, Path(tag.path)

    def manifests(self) -> Iterator[StoredManifest]:
        """Yield every readable manifest; corrupt ones are logged and skipped."""
        for name, path in self.names():
            try:
                yield self._read_path(name, path)
            except (ManifestError, ModelNotFound, StoreError) as exc:
                log.warning("skipping unreadable manifest name=%s error=%s", name.display(), exc)

    def tree_state(self) -> TreeState:
        """What the manifests folder looks like now, cheaply comparable later (``unchanged``).

        Every folder of the tree and every tag file, with their identities: adding, renaming or
        removing an entry changes its folder's mtime, rewriting a manifest (atomically or in place,
        as other tools do) changes its file's, so comparing stats finds any change without reading.
        """
        return tuple((path, _identity(path)) for path, _ in self._tree())

    def folders(self) -> list[str]:
        """The models folder and every folder of the manifests tree (what a ``TreeWatch`` watches)."""
        return [str(self.root)] + [path for path, folder in self._tree() if folder]

    def _tree(self) -> Iterator[tuple[str, bool]]:
        """Each entry of the manifests tree, host/namespace/model folders then tag files, and if it is a folder."""
        yield str(self.manifests_dir), True
        for host in _subdirs(self.manifests_dir):
            yield str(host), True
            for ns in _subdirs(host):
                yield str(ns), True
                for model in _subdirs(ns):
                    yield str(model), True
                    try:
                        tags = list(os.scandir(model))
                    except OSError:
                        continue
                    yield from ((t.path, False) for t in tags if not t.is_dir())

    @staticmethod
    def unchanged(state: TreeState) -> bool:
        """Whether nothing in the tree ``tree_state`` described has changed since (a stat per entry)."""
        return all(_identity(path) == ident for path, ident in state)

    def referenced_digests(self) -> set[str]:
        """Return every digest any manifest names; raise if a manifest cannot be read.

        Garbage collection must not guess: one unreadable manifest could name any blob.
        """
        refs: set[str] = set()
        for name, path in self.names():
            refs |= self._read_path(name, path).manifest.digests()
        return refs


def _identity(path: str | Path) -> tuple[int, ...] | None:
    """What changes whenever a file is replaced or rewritten; None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _find_casefold(folder: Path, part: str) -> str | None:
    if (folder / part).exists():
        return part
    want = part.casefold()
    try:
        for entry in os.scandir(folder):
            if entry.name.casefold() == want:
                return entry.name
    except OSError:
        return None
    return None
