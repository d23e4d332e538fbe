"""Store crash safety (P1, P2): kill -9 at named points of a blob write and a create; a full disk."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from power.errors import StoreError
from power.store import ModelStore
from power.store.atomic import TMP_PREFIX
from power.store.blobs import BlobStore
from tests.tinymodels import write_llama

ROOT = Path(__file__).resolve().parents[2]

# A writer that creates models over and over; KILL_AT names the instant it SIGKILLs itself.
WRITER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from power.store import ModelStore

    point, root, gguf = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        kind = "manifest" if "manifests" in str(dst) else "blob"
        if point == f"before-{{kind}}-rename":
            die()
        real_replace(src, dst, *a, **k)
        if point == f"after-{{kind}}-rename":
            die()

    os.replace = replace
    store = ModelStore(root, noprune=True)

    def chunks(n):
        for i in range(n):
            yield bytes([i % 251]) * (1 << 20)
            if point == "mid-blob" and i == n // 2:
                die()

    if point in ("mid-blob", "before-blob-rename", "after-blob-rename"):
        store.blobs.add_stream(chunks(8))
    elif point == "loop":  # for kills at arbitrary instants: blob writes and creates, over and over
        for i in range(1000):
            store.blobs.add_stream(bytes([i % 251, j]) * (1 << 19) for j in range(4))
            digest = store.blobs.add_file(gguf).digest
            for _ in store.create({{"model": f"m{{i}}", "files": {{"m.gguf": digest}}, "system": str(i)}}):
                pass
    else:
        digest = store.blobs.add_file(gguf).digest
        for _ in store.create({{"model": "victim", "files": {{"m.gguf": digest}}, "system": "crash"}}):
            pass
    print("survived", flush=True)
""")

POINTS = ["mid-blob", "before-blob-rename", "after-blob-rename", "before-manifest-rename",
          "after-manifest-rename"]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("crash-gguf") / "m.gguf")


def _check_store(root: Path) -> None:
    """Every final blob holds what its name says; every manifest names only blobs that exist."""
    blobs = root / "blobs"
    for p in blobs.iterdir() if blobs.exists() else ():
        if p.name.startswith("sha256-"):
            h = hashlib.sha256(p.read_bytes()).hexdigest()
            assert p.name == f"sha256-{h}", f"{p.name} holds other content"
    store = ModelStore(root, noprune=True)
    for summary in store.list():
        record = store.get(summary.name)
        assert record.model_path is None or record.model_path.exists()
    for manifest in (root / "manifests").rglob("*") if (root / "manifests").exists() else ():
        if manifest.is_file() and not manifest.name.startswith(TMP_PREFIX):
            for digest in re.findall(r"sha256:([0-9a-f]{64})", manifest.read_text()):
                assert (blobs / f"sha256-{digest}").exists(), f"{manifest} names a missing blob"


def _temps(root: Path) -> list[Path]:
    return list(root.rglob(f"{TMP_PREFIX}*"))


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_at_a_named_point(tmp_path: Path, gguf: Path, point: str) -> None:
    root = tmp_path / "models"
    proc = subprocess.run([sys.executable, "-c", WRITER.format(root=str(ROOT)), point, str(root), str(gguf)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _check_store(root)
    if point.startswith("before") or point == "mid-blob":
        assert _temps(root), "the writer died holding a temporary file"
    store = ModelStore(root)
    store.startup()  # the next start clears what the dead writer left
    assert _temps(root) == []
    _check_store(root)
    names = [m.name.display() for m in store.list()]
    assert names == (["victim:latest"] if point == "after-manifest-rename" else [])


@pytest.mark.parametrize("delay", [0.4, 0.6, 0.9, 1.3, 1.8])
def test_kill_9_at_random_instants(tmp_path: Path, gguf: Path, delay: float) -> None:
    root = tmp_path / "models"
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT)), "loop", str(root), str(gguf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.kill()
    proc.wait(30)
    _check_store(root)
    ModelStore(root).startup()
    assert _temps(root) == []
    _check_store(root)


def test_prune_spares_a_live_writer(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", reserve=0)
    seen: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b"a" * 1000
        seen.append(blobs.remove_stale_temps())  # a prune from elsewhere while we write
        yield b"b" * 1000

    info = blobs.add_stream(chunks())
    assert seen == [0] and blobs.exists(info.digest)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_disk_full_blob_write_is_a_clean_store_error(small_disk: Path) -> None:
    blobs = BlobStore(small_disk / "blobs", reserve=0)
    with pytest.raises(StoreError, match="no space left on device"):
        blobs.add_stream(b"x" * (1 << 20) for _ in range(3))
    assert list((small_disk / "blobs").iterdir()) == []
    assert blobs.add_bytes(b"small").created  # the space came back


def test_disk_full_create_leaves_the_store_as_it_was(small_disk: Path, gguf: Path) -> None:
    store = ModelStore(small_disk / "models", noprune=True)
    with pytest.raises(StoreError, match="disk reserve"):  # the reserve check comes first
        list(store.create_from_modelfile("big", f"FROM {gguf}", gguf.parent))
    store.blobs.reserve = 0
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"f" * max(0, free - gguf.stat().st_size // 2))
    with pytest.raises(StoreError, match="no space left on device"):
        list(store.create_from_modelfile("big", f"FROM {gguf}", gguf.parent))
    assert store.list() == [] and _temps(small_disk / "models") == []
    blobs = small_disk / "models" / "blobs"
    assert not blobs.exists() or list(blobs.iterdir()) == []
    filler.unlink()
    list(store.create_from_modelfile("big", f"FROM {gguf}", gguf.parent))
    assert [m.name.display() for m in store.list()] == ["big:latest"] and _temps(small_disk / "models") == []
