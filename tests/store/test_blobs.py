from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from power.errors import DigestMismatch, InvalidDigest, NotFound, StoreError, StoreFull
from power.store.atomic import TMP_PREFIX
from power.store.blobs import BlobStore, blob_filename, parse_digest


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", reserve=0)


def leftovers(blobs: BlobStore) -> list[str]:
    return sorted(os.listdir(blobs.root)) if blobs.root.exists() else []


def test_parse_digest_canonicalises() -> None:
    hexd = "AB" * 32
    assert parse_digest("sha256:" + hexd) == "sha256:" + hexd.lower()
    assert parse_digest("sha256-" + hexd) == "sha256:" + hexd.lower()
    assert blob_filename("sha256:" + hexd) == "sha256-" + hexd.lower()


@pytest.mark.parametrize("bad", [
    "sha256:" + "a" * 63, "sha256:" + "a" * 65, "sha512:" + "a" * 64, "sha256:" + "g" * 64,
    "sha256:../" + "a" * 61, "sha256:" + "a" * 63 + "/", "a" * 64, "", None, 5,
    "sha256:" + "a" * 64 + "\n", "sha256:" + "a" * 32 + "/.." + "a" * 29,
])
def test_bad_digests_refused_before_any_path(bad: object, blobs: BlobStore) -> None:
    with pytest.raises(InvalidDigest):
        parse_digest(bad)
    with pytest.raises(InvalidDigest):
        blobs.path(bad)  # type: ignore[arg-type]


def test_add_bytes_writes_content_addressed_file(blobs: BlobStore) -> None:
    info = blobs.add_bytes(b"hello")
    assert info.digest == digest_of(b"hello") and info.size == 5 and info.created
    assert blobs.path(info.digest).read_bytes() == b"hello"
    assert blobs.exists(info.digest) and blobs.size(info.digest) == 5
    assert blobs.add_bytes(b"hello").created is False
    assert leftovers(blobs) == [blob_filename(info.digest)]


def test_expected_digest_mismatch_leaves_nothing(blobs: BlobStore) -> None:
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        blobs.add_stream([b"abc", b"def"], expected=digest_of(b"other"))
    assert leftovers(blobs) == []


def test_expected_digest_existing_is_not_read(blobs: BlobStore) -> None:
    info = blobs.add_bytes(b"data")

    def never() -> list[bytes]:
        raise AssertionError("source read although the blob exists")

    class Source:
        def read(self, n: int) -> bytes:
            return never()  # type: ignore[return-value]

    assert blobs.add_stream(Source(), expected=info.digest).created is False  # type: ignore[arg-type]


def test_stream_from_file_object(tmp_path: Path, blobs: BlobStore) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    info = blobs.add_file(src, expected=digest_of(src.read_bytes()))
    assert blobs.path(info.digest).read_bytes() == src.read_bytes()
    with blobs.open(info.digest) as f:
        assert f.read(4) == src.read_bytes()[:4]


def test_failure_midway_leaves_nothing(blobs: BlobStore) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b"x" * 100
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        blobs.add_stream(chunks())
    assert leftovers(blobs) == []


def test_size_cap_and_disk_reserve(tmp_path: Path) -> None:
    capped = BlobStore(tmp_path / "a", max_size=10, reserve=0)
    with pytest.raises(StoreError, match="limit"):
        capped.add_bytes(b"x" * 11)
    assert leftovers(capped) == []
    greedy = BlobStore(tmp_path / "b", reserve=1 << 62)
    with pytest.raises(StoreFull, match="space") as full:
        greedy.add_bytes(b"x")
    assert full.value.status == 507  # Insufficient Storage, not a 500
    assert leftovers(greedy) == []


def test_concurrent_writers_of_one_digest_end_with_one_file(blobs: BlobStore) -> None:
    data = os.urandom(1 << 20)
    results = []

    def write() -> None:
        results.append(blobs.add_bytes(data))

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.digest for r in results} == {digest_of(data)}
    assert leftovers(blobs) == [blob_filename(digest_of(data))]
    assert blobs.path(digest_of(data)).read_bytes() == data


def test_missing_blob_is_not_found(blobs: BlobStore) -> None:
    d = digest_of(b"nope")
    assert not blobs.exists(d) and blobs.delete(d) is False
    with pytest.raises(NotFound):
        blobs.open(d)
    with pytest.raises(NotFound):
        blobs.size(d)


def test_read_bytes_refuses_large(blobs: BlobStore) -> None:
    info = blobs.add_bytes(b"x" * 100)
    with pytest.raises(StoreError):
        blobs.read_bytes(info.digest, limit=10)


def test_digests_lists_only_final_blobs(blobs: BlobStore) -> None:
    a = blobs.add_bytes(b"a").digest
    (blobs.root / f"{TMP_PREFIX}junk").write_bytes(b"")
    (blobs.root / (blob_filename(a) + "-partial")).write_bytes(b"")
    (blobs.root / "README").write_bytes(b"")
    assert blobs.digests() == {a}


def test_stale_temps_removed_fresh_kept(blobs: BlobStore) -> None:
    blobs.root.mkdir(parents=True)
    old, new = blobs.root / f"{TMP_PREFIX}old", blobs.root / f"{TMP_PREFIX}new"
    old.write_bytes(b"")
    new.write_bytes(b"")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert blobs.remove_stale_temps() == 1
    assert not old.exists() and new.exists()


def test_adopt_renames_without_copy(blobs: BlobStore, tmp_path: Path) -> None:
    tmp = blobs.temp_path(".gguf")
    tmp.write_bytes(b"quantized")
    info = blobs.adopt(tmp)
    assert info.digest == digest_of(b"quantized") and not tmp.exists()
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"x")
    with pytest.raises(StoreError):
        blobs.adopt(outside)
