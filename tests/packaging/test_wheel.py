"""The sdist and the wheel built from it, then the wheel installed in a fresh venv and used as a user would.

Run with ``pytest -m packaging tests/packaging`` (``.ci/run`` does); the fixtures are in conftest.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from power.cli.private import free_port
from tests.packaging.conftest import ROOT, Built, Installed, clean_env, run
from tests.tinymodels import write_llama

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(5400)]  # the build is the first test's setup

PIN = tomllib.loads((ROOT / "vendor" / "pin.toml").read_text())
LIBS = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-rpc.so", "libmtmd.so", "libpower_shim.so",
        "power_shim.h")
MODELFILE = "FROM ./tiny.gguf\nPARAMETER num_predict 8\nPARAMETER seed 3\n"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runpaths(lib: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    return [p for m in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[(.*)\]", out)
            for p in m.split(":")]


def site_lib(inst: Installed) -> Path:
    out = run([inst.python, "-P", "-c", "import power.native as n; print(n.LIB_DIR)"], env=inst.env, cwd=inst.python.parent)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


# ---- what was built ---------------------------------------------------------------

def test_the_sdist_carries_the_pinned_llama_cpp_and_nothing_built(built: Built) -> None:
    with tarfile.open(built.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        top = tar.getnames()[0].split("/", 1)[0]
        stamp = tar.extractfile(f"{top}/vendor/llama.cpp/.power-pin")
        assert stamp is not None
        assert stamp.read().decode().split()[:2] == [PIN["sha256"], PIN["llama_cpp_commit"]]
    assert {"pyproject.toml", "CMakeLists.txt", "vendor/fetch.py", "vendor/llama.cpp/CMakeLists.txt",
            "csrc/power_shim.h", "power/__init__.py"} <= names
    assert not [n for n in names if n.endswith(".so") or n.startswith(("build/", "power/lib/", ".venv/"))
                or n.endswith(PIN["archive"])]


def test_the_wheel_carries_every_native_library_with_origin_runpaths(built: Built, tmp_path: Path) -> None:
    with zipfile.ZipFile(built.wheel) as zf:
        zf.extractall(tmp_path)
        names = zf.namelist()
    lib = tmp_path / "power" / "lib"
    for name in LIBS:
        assert (lib / name).is_file(), name
    variants = sorted(p.name for p in lib.glob("libggml-cpu-*.so"))
    assert {"libggml-cpu-x64.so", "libggml-cpu-haswell.so", "libggml-cpu-skylakex.so"} <= set(variants), variants
    # Every library finds its neighbours (and auditwheel's grafted ones) relative to itself, never a build path.
    for so in [*lib.glob("*.so"), *tmp_path.glob("*.libs/*.so*")]:
        paths = runpaths(so)
        assert all(p.startswith("$ORIGIN") for p in paths), (so.name, paths)
    assert not [n for n in names if n.endswith((".c", ".cpp", ".o"))]
    assert re.search(r"-py3-none-manylinux_\d+_\d+_x86_64", built.wheel.name), built.wheel.name


def test_the_wheel_metadata_lists_the_dependencies_and_extras(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    project = pyproject()["project"]
    requires = meta.get_all("Requires-Dist") or []
    for dep in project["dependencies"]:
        assert dep.replace(" ", "") in [r.replace(" ", "") for r in requires], dep
    assert set(meta.get_all("Provides-Extra") or []) == set(project["optional-dependencies"])
    assert meta["Requires-Python"] == project["requires-python"]


# ---- the wheel installed --------------------------------------------------------------

def test_the_installed_package_is_the_one_that_runs(installed: Installed, elsewhere: Path) -> None:
    code = ("import importlib.metadata as m, power, power.native as n; "
            "print(m.version('a3s-power'), power.__version__, power.__file__, n.LIB_DIR, n.llama_commit())")
    out = run([installed.python, "-P", "-c", code], env=installed.env, cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    meta_version, version, where, lib_dir, commit = out.stdout.split()
    site = installed.python.parents[1]
    assert meta_version == version and commit == PIN["llama_cpp_commit"]
    assert Path(where).is_relative_to(site) and Path(lib_dir).is_relative_to(site)
    for argv in ([installed.cli, "--version"], [installed.python, "-P", "-m", "power", "--version"]):
        shown = run(argv, env=installed.env, cwd=elsewhere)
        assert shown.returncode == 0, shown.stderr
        assert f"client version is {meta_version}" in shown.stdout


def test_the_best_cpu_variant_for_this_machine_is_loaded(installed: Installed, elsewhere: Path) -> None:
    flags = set(re.findall(r"\S+", Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0]))
    out = run([installed.python, "-P", "-c", "import power.native as n; print(n.system_info())"], env=installed.env,
              cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    info = out.stdout
    if "avx2" in flags:
        assert "AVX2 = 1" in info, info
    if "avx512f" in flags:
        assert "AVX512 = 1" in info, info
    if "avx512_bf16" in flags:
        assert "AVX512_BF16 = 1" in info, info


def test_create_run_and_serve_with_the_installed_wheel(installed: Installed, elsewhere: Path) -> None:
    write_llama(elsewhere / "tiny.gguf")
    (elsewhere / "Modelfile").write_text(MODELFILE)
    env = {**installed.env, "OLLAMA_HOST": f"127.0.0.1:{free_port()}"}
    created = run([installed.cli, "create", "tiny", "-f", "Modelfile"], env=env, cwd=elsewhere)
    assert created.returncode == 0, created.stdout + created.stderr
    ran = run([installed.cli, "run", "tiny", "hello there"], env=env, cwd=elsewhere)  # no server: a private one
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip()

    port = env["OLLAMA_HOST"].rsplit(":", 1)[1]
    log = elsewhere / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(installed.cli), "serve"], env=env, cwd=elsewhere, stdout=sink, stderr=sink,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        version = wait_for_json(f"http://127.0.0.1:{port}/api/version", proc, log)
        assert version == {"version": metadata_version(installed)}
        body = json.dumps({"model": "tiny", "prompt": "hello", "stream": False}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/generate", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            answer = json.load(resp)
        assert answer["done"] is True and answer["eval_count"] >= 1
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def metadata_version(inst: Installed) -> str:
    out = run([inst.python, "-P", "-c", "import importlib.metadata as m; print(m.version('a3s-power'))"], env=inst.env,
              cwd=inst.python.parent)
    return out.stdout.strip()


def wait_for_json(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.load(resp)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log.read_text(errors="replace")[-2000:]) from None
            time.sleep(0.2)


def test_a_gpu_backend_that_cannot_load_falls_back_to_the_cpu(installed: Installed, elsewhere: Path) -> None:
    """A CUDA wheel on a machine without the driver: libggml-cuda.so fails to load and the CPU serves."""
    installed_lib = site_lib(installed)
    lib = elsewhere / "site" / "power" / "lib"
    shutil.copytree(installed_lib, lib)
    for grafted in installed_lib.parents[1].glob("*.libs"):  # auditwheel's, found through $ORIGIN/../..
        shutil.copytree(grafted, elsewhere / "site" / grafted.name)
    (lib / "libggml-cuda.so").write_bytes(b"\x7fELF not really a library")
    write_llama(elsewhere / "tiny.gguf")
    code = ("import power.native as n; print([d.kind for d in n.devices()]); "
            "m = n.Model('tiny.gguf'); print('loaded', m is not None)")
    out = run([installed.python, "-P", "-c", code], env={**installed.env, "A3S_POWER_LIB_DIR": str(lib)}, cwd=elsewhere)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "'cpu'" in out.stdout and "loaded True" in out.stdout


# ---- bad input ---------------------------------------------------------------------------

def test_a_corrupted_archive_stops_the_build_with_one_line_and_no_wheel(built: Built, tmp_path: Path) -> None:
    """An sdist without its llama.cpp tree, offline, with a wrong archive where pip would look: no wheel."""
    src = tmp_path / "src"
    with tarfile.open(built.sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (top,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    top.rename(src)
    shutil.rmtree(src / "vendor" / "llama.cpp")
    links = tmp_path / "links"
    links.mkdir()
    shutil.copytree(built.reqs, links, dirs_exist_ok=True)
    (links / PIN["archive"]).write_bytes(b"truncated")
    env = clean_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links), PIP_CONFIG_FILE="/dev/null")
    out = tmp_path / "wheels"
    r = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, src], env=env,
            cwd=tmp_path, timeout=600)
    assert r.returncode != 0
    lines = [line.strip() for line in (r.stdout + r.stderr).splitlines() if line.strip().startswith("a3s-power: ")]
    assert lines and "sha256 mismatch" in lines[0] and PIN["archive"] in lines[0], r.stdout[-3000:]
    assert not list(out.glob("*.whl"))
    assert not (src / "vendor" / "llama.cpp").exists()
