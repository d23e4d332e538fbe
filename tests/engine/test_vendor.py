"""The pinned llama.cpp source: a wrong archive stops the build with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[2] / "vendor"


def test_wrong_hash_is_refused_and_nothing_is_unpacked(tmp_path: Path) -> None:
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    fake.write_bytes(b"not the pinned archive")
    before = (VENDOR / "llama.cpp" / ".power-pin").read_text()
    r = subprocess.run([sys.executable, str(VENDOR / "fetch.py"), "--force", "--archive", str(fake)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "sha256 mismatch" in r.stderr and "refusing" in r.stderr
    assert (VENDOR / "llama.cpp" / ".power-pin").read_text() == before


def test_cmake_runs_the_fetch_script_when_the_tree_is_missing() -> None:
    text = (VENDOR.parent / "CMakeLists.txt").read_text()
    assert "vendor/fetch.py" in text and "FATAL_ERROR" in text
