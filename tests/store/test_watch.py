"""ModelStore.listing with the kernel's change notices (power/store/watch.py): any change is listed at once,
what inotify cannot see within RECHECK_S, and without inotify as before."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from power.store import ModelStore
from power.store import library as library_module
from power.store.watch import TreeWatch

FOLDERS = ("manifests", "registry.ollama.ai")


def _create(store: ModelStore, name: str, gguf: Path) -> None:
    info = store.blobs.add_file(gguf)
    for _ in store.create({"model": name, "files": {gguf.name: info.digest}}):
        pass


def names(store: ModelStore) -> list[str]:
    return sorted(m.name.display() for m in store.listing())


@pytest.mark.parametrize("watched", [True, False])
def test_every_change_is_listed_at_once(tmp_path: Path, tiny_gguf: Path, watched: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if not watched:  # inotify missing or refused: the stats are compared at every listing
        monkeypatch.setattr(TreeWatch, "open", classmethod(lambda cls: None))
    store = ModelStore(tmp_path / "models", noprune=True)
    assert store.watch_listing() is watched
    assert names(store) == []  # no models folder yet: made by the first create, and seen
    _create(store, "tiny", tiny_gguf)
    assert names(store) == ["tiny:latest"]
    unchanged = store.listing()
    assert store.listing() is unchanged  # the same tuple while nothing changes
    library = tmp_path.joinpath("models", *FOLDERS)
    manifest = (library / "library" / "tiny" / "latest").read_bytes()
    shutil.copyfile(library / "library" / "tiny" / "latest", library / "library" / "tiny" / "v2")
    assert names(store) == ["tiny:latest", "tiny:v2"]  # a tag added behind the store's back
    (library / "team" / "new").mkdir(parents=True)  # new folders, then a tag in the newest of them
    assert names(store) == ["tiny:latest", "tiny:v2"]
    (library / "team" / "new" / "latest").write_bytes(manifest)
    assert names(store) == ["team/new:latest", "tiny:latest", "tiny:v2"]
    (library / "team" / "new" / "v3").write_bytes(manifest)  # and another, once the folder is watched
    assert "team/new:v3" in names(store)
    with open(library / "library" / "tiny" / "v2", "r+b") as f:  # rewritten in place
        f.seek(0)
        f.truncate()
        f.write(manifest.replace(b"}", b" }", 1))
    digests = {m.name.display(): m.digest for m in store.listing()}
    assert digests["tiny:v2"] != digests["tiny:latest"]
    shutil.rmtree(library / "team")
    (library / "library" / "tiny" / "v2").unlink()
    assert names(store) == ["tiny:latest"]
    shutil.rmtree(tmp_path / "models" / "manifests")  # the whole tree, then made again
    assert names(store) == []
    _create(store, "again", tiny_gguf)
    assert names(store) == ["again:latest"]
    store.close()


def test_what_inotify_misses_is_listed_within_the_recheck(tmp_path: Path, tiny_gguf: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore(tmp_path / "models", noprune=True)
    _create(store, "tiny", tiny_gguf)
    assert store.watch_listing() and names(store) == ["tiny:latest"]
    watch = store._watch
    assert watch is not None
    monkeypatch.setattr(watch, "changed", lambda: False)  # as for another host's write to a network folder
    now = [1000.0]
    monkeypatch.setattr(library_module.time, "monotonic", lambda: now[0])
    store._compared = now[0]
    library = tmp_path.joinpath("models", *FOLDERS, "library", "tiny")
    shutil.copyfile(library / "latest", library / "v2")
    assert names(store) == ["tiny:latest"]  # unseen, within the recheck interval
    now[0] += library_module.RECHECK_S
    assert names(store) == ["tiny:latest", "tiny:v2"]  # the stats compared: seen
    store.close()
