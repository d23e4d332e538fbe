#!/usr/bin/env python3
"""Obtain the pinned llama.cpp source into vendor/llama.cpp/.

Downloads the pinned source archive with pip, checks its sha256 against
vendor/pin.toml and unpacks the parts of llama.cpp the build needs. A wrong
hash stops with a clear message and leaves nothing unpacked.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Parts of the llama.cpp tree that nothing here builds or reads.
SKIP_TOP = {".git", ".github", ".devops", "docs", "media", "benches", "examples/llama.android",
            "examples/llama.swiftui"}
STAMP = ".power-pin"


def load_pin() -> dict:
    return tomllib.loads((HERE / "pin.toml").read_text())


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(pin: dict, dest: Path) -> Path:
    cached = HERE / pin["archive"]
    if cached.is_file():
        return cached
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--no-binary", pin["package"], "-d", str(dest), f"{pin['package']}=={pin['version']}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    got = dest / pin["archive"]
    if not got.is_file():
        sys.exit(f"vendor/fetch.py: pip did not produce {pin['archive']}")
    return got


def wanted(rel: str) -> bool:
    parts = rel.split("/")
    if any(p == ".git" for p in parts):
        return False
    for skip in SKIP_TOP:
        if rel == skip or rel.startswith(skip + "/"):
            return False
    return True


def unpack(archive: Path, pin: dict, target: Path) -> None:
    prefix = f"llama_cpp_python-{pin['version']}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix):
                    continue
                rel = m.name[len(prefix):]
                if not rel or not wanted(rel) or not (m.isfile() or m.isdir()):
                    continue
                m.name = rel
                members.append(m)
            tar.extractall(tmp, members=members, filter="data")
        (tmp / STAMP).write_text(f"{pin['sha256']} {pin['llama_cpp_commit']}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_current(target: Path, pin: dict) -> bool:
    stamp = target / STAMP
    return stamp.is_file() and stamp.read_text().split()[:2] == [pin["sha256"], pin["llama_cpp_commit"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, help="use this archive instead of downloading")
    ap.add_argument("--force", action="store_true", help="unpack again even if current")
    args = ap.parse_args(argv)
    pin = load_pin()
    target = HERE / "llama.cpp"
    if is_current(target, pin) and not args.force:
        print(f"vendor/llama.cpp is current ({pin['llama_cpp_commit']})")
        return 0
    with tempfile.TemporaryDirectory() as d:
        archive = args.archive or download(pin, Path(d))
        digest = sha256_of(archive)
        if digest != pin["sha256"]:
            sys.stderr.write(
                f"vendor/fetch.py: sha256 mismatch for {archive.name}: expected {pin['sha256']}, got {digest}; "
                "refusing to build from an archive that is not the pinned one\n")
            return 1
        if archive.parent == Path(d):
            shutil.copy2(archive, HERE / pin["archive"])  # cache for rebuilds (ignored by git)
        unpack(archive, pin, target)
    print(f"unpacked llama.cpp {pin['llama_cpp_commit']} into {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
