"""The packaging check's fixtures: the committed tree built into an sdist and a wheel, installed in a fresh venv.

Building takes minutes (the native libraries are compiled again, with every CPU variant), so the
tests marked ``packaging`` run only when the marker is named: ``pytest -m packaging tests/packaging``
(``.ci/run`` does). They build what HEAD holds, as CI's fresh clone would, not uncommitted edits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from power.cli.private import free_port

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "packaging" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the packaging check runs when named: pytest -m packaging")
    for item in items:
        if item.get_closest_marker("packaging"):
            item.add_marker(skip)


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path
    reqs: Path  # the build requirements, for builds with no index


@dataclass(frozen=True)
class Installed:
    python: Path
    cli: Path
    env: dict[str, str]  # an environment with nothing of the checkout in it


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "A3S_POWER_LIB_DIR") and not k.startswith("PYTEST")}
    env.update(extra)
    return env


def committed_tree(dest: Path) -> Path:
    """HEAD's files in ``dest``, with the checkout's unpacked llama.cpp when it is the pinned one."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], check=True,
                             capture_output=True).stdout
    tar_path = dest.parent / "head.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    tar_path.unlink()
    vendored = ROOT / "vendor" / "llama.cpp"
    if (vendored / ".power-pin").is_file():
        shutil.copytree(vendored, dest / "vendor" / "llama.cpp", symlinks=True)
    for cached in (ROOT / "vendor").glob("*.tar.gz"):  # spares fetch.py a download if it runs
        shutil.copy2(cached, dest / "vendor" / cached.name)
    return dest


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """scripts/wheel.sh run on the committed tree, then the tree deleted: nothing may point back at it.

    A3S_POWER_PACKAGING_DIST names the OUT folder of an earlier ``scripts/wheel.sh SOURCE OUT`` to test
    instead of building again.
    """
    given = os.environ.get("A3S_POWER_PACKAGING_DIST")
    if given:
        return _found(Path(given))
    base = tmp_path_factory.mktemp("packaging")
    src = committed_tree(base / "src")
    out = base / "dist"
    r = subprocess.run(["bash", str(src / "scripts" / "wheel.sh"), str(src), str(out)], env=clean_env(),
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(src)
    shutil.rmtree(out / ".work" / "tmp", ignore_errors=True)  # pip's build folders
    return _found(out)


def _found(out: Path) -> Built:
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Built(sdist=sdist, wheel=wheel, reqs=out / ".work" / "reqs")


@pytest.fixture(scope="session")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel in a fresh virtual environment outside the checkout."""
    where = tmp_path_factory.mktemp("installed")
    venv.create(where / "venv", with_pip=True)
    python = where / "venv" / "bin" / "python"
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", str(built.wheel)], env=clean_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    home = where / "home"
    # OLLAMA_HOST: a port nothing listens on, so no other server on this machine answers for a private one.
    env = clean_env(A3S_POWER_HOME=str(home), OLLAMA_MODELS=str(home / "models"), OLLAMA_CONTEXT_LENGTH="256",
                    OLLAMA_HOST=f"127.0.0.1:{free_port()}")
    return Installed(python=python, cli=python.with_name("a3s-power"), env=env)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working folder away from the checkout, holding a decoy ``power/`` package."""
    folder = tmp_path / "elsewhere"
    (folder / "power").mkdir(parents=True)
    (folder / "power" / "__init__.py").write_text('raise ImportError("the decoy power package was imported")\n')
    return folder


def run(argv: list[str | Path], *, env: dict[str, str], cwd: Path, timeout: float = 180,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)

