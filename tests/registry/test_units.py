"""Pure parts of the registry package: challenges, names, quantization choice, progress, locks, disk space."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from power.errors import InvalidName, RegistryError, StoreError
from power.names import parse_name
from power.registry.auth import Challenge, parse_challenge
from power.registry.client import base_url_for
from power.registry.download import Download
from power.registry.flight import FlightLock
from power.registry.progress import LayerProgress
from power.registry.sources import _choose, _choose_projector, _gguf_files, name_for_url
from power.store.blobs import BlobStore


def test_parse_challenge() -> None:
    header = 'Bearer realm="https://r.example/token",service="reg",scope="repository:a/b:pull,push"'
    assert parse_challenge(header) == Challenge("https://r.example/token", "reg", "repository:a/b:pull,push")
    assert parse_challenge('Basic realm="x"') is None
    assert parse_challenge("Bearer service=x") is None
    assert parse_challenge('bearer realm=https://h/t') == Challenge("https://h/t")


@given(st.text(max_size=300))
def test_parse_challenge_is_total(text: str) -> None:
    result = parse_challenge(text)
    assert result is None or isinstance(result, Challenge)


def test_name_for_url() -> None:
    assert name_for_url("https://h.example/a/Llama-3.2-1B.Q4_K_M.gguf").display() == "llama-3.2-1b.q4_k_m:latest"
    assert name_for_url("https://h.example/x%20y.gguf?download=1").model == "x-y"
    for bad in ("https://h.example/model.bin", "https://h.example/.gguf", "https://h.example/---.gguf"):
        with pytest.raises(InvalidName):
            name_for_url(bad)


def test_quant_choice() -> None:
    files = [{"rfilename": f} for f in ("m-Q8_0.gguf", "m-Q4_0.gguf", "m.IQ3_XS.gguf")]
    assert _choose(files, "Q4_K_M", explicit=False)["rfilename"] == "m-Q4_0.gguf"  # type: ignore[index]
    assert _choose(files, "iq3_xs", explicit=True)["rfilename"] == "m.IQ3_XS.gguf"  # type: ignore[index]
    assert _choose(files, "Q5_K_M", explicit=True) is None


def test_projector_choice() -> None:
    def pick(*names: str) -> str | None:
        chosen = _choose_projector([{"rfilename": n} for n in names])
        return None if chosen is None else f"{chosen[0]['rfilename']} {chosen[1]}"

    assert pick("mmproj-m-Q8_0.gguf", "mmproj-m-f32.gguf", "mmproj-model-f16.gguf") == "mmproj-model-f16.gguf F16"
    assert pick("mmproj-m-Q8_0.gguf", "mmproj-m-F32.gguf", "mmproj-m-BF16.gguf") == "mmproj-m-BF16.gguf BF16"
    assert pick("mmproj-m-Q8_0.gguf", "mmproj-m-F32.gguf") == "mmproj-m-F32.gguf F32"
    assert pick("mmproj-m-Q4_K_M.gguf", "mmproj-m-Q8_0.gguf") == "mmproj-m-Q8_0.gguf Q8_0"
    assert pick("mmproj.gguf", "mmproj-m-Q4_K_M.gguf") == "mmproj.gguf "
    assert pick() is None
    listing = {"siblings": [{"rfilename": n} for n in (
        "m-Q4_K_M.gguf", "MMPROJ-m-F16.gguf", "m-Q8_0-00001-of-00002.gguf", "../x.gguf", "readme.md")]}
    models, projectors = _gguf_files(listing)
    assert [f["rfilename"] for f in models] == ["m-Q4_K_M.gguf"]
    assert [f["rfilename"] for f in projectors] == ["MMPROJ-m-F16.gguf"]


def test_base_url() -> None:
    assert base_url_for(parse_name("llama3"), {}, False) == "https://registry.ollama.ai"
    assert base_url_for(parse_name("h.example:5000/a/b"), {}, True) == "http://h.example:5000"
    assert base_url_for(parse_name("llama3"), {"registry.ollama.ai": "http://127.0.0.1:9/"}, False) == \
        "http://127.0.0.1:9"
    with pytest.raises(RegistryError, match="insecure"):
        base_url_for(parse_name("http://h.example/a/b"), {}, False)


def test_layer_progress_lines() -> None:
    p = LayerProgress("pulling")
    d = "sha256:" + "ab" * 32
    p.add(d, 100)
    p.add("sha256:" + "cd" * 32, 7, 7)
    first = p.changed()
    assert first[0] == {"status": "pulling abababababab", "digest": d, "total": 100}
    assert first[1]["completed"] == 7
    p.setter(d)(40)
    assert p.changed() == [{"status": "pulling abababababab", "digest": d, "total": 100, "completed": 40}]
    assert p.changed() == []


def test_flight_lock_excludes_threads_and_processes_and_survives_kill(tmp_path: Path) -> None:
    path = tmp_path / "sha256-x-partial.lock"
    a, b = FlightLock(path), FlightLock(path)
    assert a.try_acquire() and not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()
    code = ("import sys,time; from pathlib import Path; from power.registry.flight import FlightLock;"
            f"l=FlightLock(Path({str(path)!r})); assert l.try_acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        assert not FlightLock(path).try_acquire()
    finally:
        proc.kill()
        proc.wait()
    c = FlightLock(path)
    deadline = time.monotonic() + 5
    while not c.try_acquire():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.release()


def test_disk_space_checked_before_download(tmp_path: Path) -> None:
    class Never:
        def get(self, *args: object) -> object:
            raise AssertionError("no request may be sent")

    blobs = BlobStore(tmp_path / "blobs", reserve=1 << 60)
    with pytest.raises(StoreError, match="no space left"):
        Download(blobs, Never(), 1 << 20, digest="sha256:" + "ab" * 32).run()  # type: ignore[arg-type]
    assert blobs.digests() == set() and not [p for p in blobs.root.iterdir() if "partial" in p.name]
