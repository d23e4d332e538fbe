"""Uploaded blobs a create never came to use are collected (issue 12 item 8), on a real full disk too."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from power.errors import InvalidRequest, StoreError
from power.store import ModelStore
from tests.store.test_create import blob_digest
from tests.tinymodels import write_llama
from tests.tmpfs import small_tmpfs


def upload(store: ModelStore, path: Path) -> str:
    """What ``POST /api/blobs/<digest>`` does."""
    return store.blobs.add_stream(open(path, "rb"), expected=blob_digest(path)).digest


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk") as mount:
        yield mount


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until ``leave`` bytes are free."""
    stat = os.statvfs(disk)
    left = stat.f_bavail * stat.f_frsize - leave
    with open(disk / "filler", "wb") as f:
        while left > 0:
            try:
                left -= f.write(b"\0" * min(left, 1 << 20))
                f.flush()
            except OSError:  # full to the last page
                return


def blob_files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.blobs.root.iterdir()) if store.blobs.root.is_dir() else []


@pytest.mark.parametrize("reserve", [0, None], ids=["enospc", "reserve"])
def test_create_failing_on_a_full_disk_takes_its_upload_along(tmpfs: Path, tiny_gguf: Path,
                                                               reserve: int | None) -> None:
    store = ModelStore(tmpfs / "models")
    if reserve is not None:
        store.blobs.reserve = reserve
    digest = upload(store, tiny_gguf)
    fill(tmpfs, leave=(store.blobs.reserve // 2) if store.blobs.reserve else 0)
    with pytest.raises(StoreError, match="no space left on device"):
        list(store.create({"model": "tiny", "files": {"tiny.gguf": digest}, "system": "x" * 100_000}))
    assert blob_files(store) == []  # no orphan, no temporary file
    (tmpfs / "filler").unlink()
    again = ModelStore(tmpfs / "models")
    assert again.startup() == [] and blob_files(again) == []  # and nothing for a restart to find
    again.close()
    digest = upload(again, tiny_gguf)  # with room again, the same create goes through
    assert list(again.create({"model": "tiny", "files": {"tiny.gguf": digest}}))[-1] == {"status": "success"}


def test_a_failed_create_leaves_uploads_that_others_still_want(store: ModelStore, tiny_gguf: Path,
                                                               tmp_path: Path) -> None:
    bad = {"model": "x"}
    used = upload(store, tiny_gguf)
    list(store.create({"model": "kept", "files": {"tiny.gguf": used}}))
    other = write_llama(tmp_path / "other.gguf", seed=3)
    fresh = upload(store, other)
    # named by a manifest: stays
    with pytest.raises(InvalidRequest, match="not a LoRA adapter"):
        list(store.create({**bad, "files": {"m.gguf": used}, "adapters": {"a.gguf": used}}))
    assert store.blobs.exists(used)
    # held by another create in progress: stays
    store.ctx.inflight[fresh] = 1
    with pytest.raises(InvalidRequest, match="not a LoRA adapter"):
        list(store.create({**bad, "files": {"m.gguf": fresh}, "adapters": {"a.gguf": fresh}}))
    assert store.blobs.exists(fresh)
    del store.ctx.inflight[fresh]

    # uploaded again by another client while this create ran: stays
    for adapter in (used, fresh):  # the create fails on another blob, or on this one
        events = store.create({**bad, "files": {"m.gguf": fresh}, "adapters": {"a.gguf": adapter}})
        next(events), next(events)  # "parsing GGUF" twice: m.gguf is held, a.gguf comes next
        time.sleep(0.01)
        upload(store, other)
        with pytest.raises(InvalidRequest, match="not a LoRA adapter"):
            list(events)
        assert store.blobs.exists(fresh)
    # nobody else: goes
    with pytest.raises(InvalidRequest, match="not a LoRA adapter"):
        list(store.create({**bad, "files": {"m.gguf": fresh}, "adapters": {"a.gguf": fresh}}))
    assert not store.blobs.exists(fresh)


def test_uploads_waiting_for_their_create_are_collected_after_the_grace(tmp_path: Path, tiny_gguf: Path) -> None:
    root = tmp_path / "models"
    store = ModelStore(root)
    waiting = upload(store, tiny_gguf)
    assert store.startup() == []  # young: a create may be on its way
    store.close()
    assert store.blobs.exists(waiting)

    sweeping = ModelStore(root, prune_grace=0.4)
    in_use = upload(sweeping, write_llama(tmp_path / "held.gguf", seed=5))
    sweeping.ctx.inflight[in_use] = 1  # a create in progress holds it
    try:
        sweeping.startup(sweep_every=0.1)
        deadline = time.monotonic() + 10
        while sweeping.blobs.exists(waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sweeping.blobs.exists(waiting)  # gone once the grace is over, with no restart
        time.sleep(0.6)
        assert sweeping.blobs.exists(in_use)  # never while a create holds it
    finally:
        sweeping.close()


def test_modelfile_limits_are_checked_before_anything_is_uploaded(store: ModelStore, model_dir: Path) -> None:
    from power.store import parse_modelfile
    from power.store.request import CREATE_LIMITS, request_from_modelfile

    uploaded: list[Path] = []
    text = "FROM ./tiny.gguf\n" + "".join(f"LICENSE l{i}\n" for i in range(CREATE_LIMITS.licenses + 1))
    with pytest.raises(InvalidRequest, match="license has"):
        request_from_modelfile(parse_modelfile(text), "m", model_dir, lambda p: uploaded.append(p))  # type: ignore
    assert uploaded == []
