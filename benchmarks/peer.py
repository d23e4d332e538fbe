"""llama.cpp's own tools, built from the same vendor/ tree as a3s-power, for side-by-side benchmarks.

They are built the way llama.cpp builds by default (shared libraries, native CPU code), which is also
how a3s-power links llama.cpp, so both sides run the same machine code.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Worktrees of one checkout may share one build of the peer: A3S_POWER_PEER_BUILD names its folder.
BUILD = Path(os.environ.get("A3S_POWER_PEER_BUILD") or ROOT / "build" / "peer")


def build_tools(*targets: str, build: Path = BUILD) -> dict[str, Path]:
    """Build (once, cached with ccache in a persistent folder) and return the named llama.cpp executables."""
    exes = {t: build / "bin" / t for t in targets}
    missing = [t for t, p in exes.items() if not p.is_file()]
    if missing:
        src = ROOT / "vendor" / "llama.cpp"
        if not (src / "CMakeLists.txt").is_file():
            subprocess.run(["python3", str(ROOT / "vendor" / "fetch.py")], check=True)
        env = dict(os.environ, CCACHE_BASEDIR=str(ROOT), CCACHE_NOHASHDIR="true")
        if not (build / "CMakeCache.txt").is_file():
            subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                            "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_OPENSSL=OFF",
                            "-DLLAMA_USE_PREBUILT_UI=OFF", "-DGGML_NATIVE=ON", "-DGGML_RPC=ON",
                            "-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"],
                           check=True, env=env)
        subprocess.run(["cmake", "--build", str(build), "--target", *missing], check=True, env=env)
    return exes
