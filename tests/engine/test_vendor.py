"""The pinned llama.cpp source: found where pip would look, checked, unpacked whole or not at all.

Also the build's checks before it compiles anything: a wrong archive, a missing compiler and a CUDA
setting without the toolkit each stop CMake with one line saying what is missing.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parents[2] / "vendor"
ROOT = VENDOR.parent
_spec = importlib.util.spec_from_file_location("power_vendor_fetch", VENDOR / "fetch.py")
assert _spec and _spec.loader
fetch = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fetch  # dataclasses look their module up there
_spec.loader.exec_module(fetch)

NAME = "llama_cpp_python-9.9.9.tar.gz"


def fake_archive(*, with_tree: bool = True) -> bytes:
    """A small stand-in for the llama-cpp-python sdist: the llama.cpp tree where the real one has it."""
    buf = io.BytesIO()
    files = {"llama_cpp_python-9.9.9/pyproject.toml": b"[project]\n"}
    if with_tree:
        files["llama_cpp_python-9.9.9/vendor/llama.cpp/CMakeLists.txt"] = b"project(llama)\n"
        files["llama_cpp_python-9.9.9/vendor/llama.cpp/src/llama.cpp"] = b"int x;\n"
        files["llama_cpp_python-9.9.9/vendor/llama.cpp/docs/skipped.md"] = b"not needed\n"
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def pinned(tmp_path: Path) -> tuple[dict, bytes]:
    data = fake_archive()
    pin = {"package": "llama-cpp-python", "version": "9.9.9", "archive": NAME,
           "sha256": hashlib.sha256(data).hexdigest(), "llama_cpp_commit": "abc1234"}
    return pin, data


def simple_index(root: Path, pin: dict, data: bytes, *, listed_hash: str | None = None) -> str:
    """A PEP 503 index in a folder (as file:// URL), the archive beside it under a relative href."""
    (root / "files").mkdir(parents=True)
    (root / "files" / pin["archive"]).write_bytes(data)
    page = root / "simple" / "llama-cpp-python"
    page.mkdir(parents=True)
    href = f"../../files/{pin['archive']}#sha256={listed_hash or pin['sha256']}"
    page.joinpath("index.html").write_text(f'<html><body><a href="{href}">{pin["archive"]}</a></body></html>')
    return (root / "simple").as_uri()


def settings(*indexes: str, find_links: tuple[str, ...] = ()) -> object:
    return fetch.PipSettings(indexes=tuple(indexes), find_links=find_links, timeout=10)


# ---- the pin -----------------------------------------------------------------------------

def test_the_pin_and_the_unpacked_tree_agree() -> None:
    pin = fetch.load_pin()
    assert fetch.is_current(VENDOR / "llama.cpp", pin), "vendor/llama.cpp is not the pinned tree: run vendor/fetch.py"
    assert (VENDOR / "llama.cpp" / "CMakeLists.txt").is_file()
    assert f'POWER_LLAMA_COMMIT="{pin["llama_cpp_commit"]}"' in (ROOT / "CMakeLists.txt").read_text()
    assert pin["archive"] == f"{pin['package'].replace('-', '_')}-{pin['version']}.tar.gz"


def test_wrong_hash_is_refused_and_nothing_is_unpacked(tmp_path: Path) -> None:
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    fake.write_bytes(b"not the pinned archive")
    before = (VENDOR / "llama.cpp" / ".power-pin").read_text()
    r = subprocess.run([sys.executable, str(VENDOR / "fetch.py"), "--force", "--archive", str(fake)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "sha256 mismatch" in r.stderr and "refusing" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (VENDOR / "llama.cpp" / ".power-pin").read_text() == before


# ---- pip's settings ------------------------------------------------------------------------

def test_index_settings_follow_pips_precedence(tmp_path: Path) -> None:
    site = tmp_path / "global.conf"
    site.write_text("[global]\nindex-url = https://mirror.example/simple\nextra-index-url = file:///a file:///b\n"
                    "find-links = /opt/wheels\ncert = /etc/ca.pem\ntimeout = 12\n")
    user = tmp_path / "user.conf"
    user.write_text("[install]\nindex-url = https://user.example/simple\n")
    s = fetch.pip_settings({}, [site, user])
    assert s.indexes == ("https://user.example/simple", "file:///a", "file:///b")  # [install] beats [global]
    assert s.find_links == ("/opt/wheels",) and s.cert == "/etc/ca.pem" and s.timeout == 12
    s = fetch.pip_settings({"PIP_EXTRA_INDEX_URL": "https://x.example/simple  https://y.example/simple",
                            "PIP_FIND_LINKS": "/w"}, [site, user])
    assert s.indexes == ("https://user.example/simple", "https://x.example/simple", "https://y.example/simple")
    assert s.find_links == ("/w",)
    assert fetch.pip_settings({"PIP_INDEX_URL": "https://env.example/simple"}, []).indexes == \
        ("https://env.example/simple",)
    assert fetch.pip_settings({}, []).indexes == (fetch.PYPI,)
    assert fetch.pip_settings({"PIP_NO_INDEX": "1"}, [site]).indexes == ()


def test_config_files_are_pips(tmp_path: Path) -> None:
    assert fetch.pip_config_files({"PIP_CONFIG_FILE": os.devnull}) == []
    mine = tmp_path / "pip.conf"
    mine.write_text("[global]\n")
    files = fetch.pip_config_files({"PIP_CONFIG_FILE": str(mine), "HOME": str(tmp_path)})
    assert files[-1] == mine and Path("/etc/pip.conf") in files
    assert tmp_path / ".config" / "pip" / "pip.conf" not in files  # an existing PIP_CONFIG_FILE skips the user's
    files = fetch.pip_config_files({"HOME": str(tmp_path), "XDG_CONFIG_DIRS": "/xdg1:/xdg2"})
    assert files[:2] == [Path("/xdg1/pip/pip.conf"), Path("/xdg2/pip/pip.conf")]
    assert tmp_path / ".config" / "pip" / "pip.conf" in files and tmp_path / ".pip" / "pip.conf" in files


# ---- finding and checking the archive ------------------------------------------------------------

def test_a_file_index_is_read_and_the_archive_cached(tmp_path: Path, pinned: tuple[dict, bytes]) -> None:
    pin, data = pinned
    index = simple_index(tmp_path / "index", pin, data)
    cache = tmp_path / "cache"
    cache.mkdir()
    got = fetch.obtain(pin, settings("file:///nowhere/simple", index), cache, tmp_path)
    assert got == cache / NAME and got.read_bytes() == data
    assert fetch.obtain(pin, settings(), cache, tmp_path) == got  # cached: no index needed


def test_find_links_folders_come_first(tmp_path: Path, pinned: tuple[dict, bytes]) -> None:
    pin, data = pinned
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / NAME).write_bytes(data)
    cache = tmp_path / "cache"
    cache.mkdir()
    urls, _ = fetch.candidates(pin, settings(find_links=(str(tmp_path / "links"),)))
    assert urls == [(tmp_path / "links" / NAME).as_uri()]
    assert fetch.obtain(pin, settings(find_links=(str(tmp_path / "links"),)), cache, tmp_path).read_bytes() == data


def test_a_corrupted_cached_archive_is_replaced(tmp_path: Path, pinned: tuple[dict, bytes]) -> None:
    pin, data = pinned
    index = simple_index(tmp_path / "index", pin, data)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / NAME).write_bytes(data[: len(data) // 2])
    assert fetch.obtain(pin, settings(index), cache, tmp_path).read_bytes() == data


def test_an_index_listing_another_hash_is_not_downloaded(tmp_path: Path, pinned: tuple[dict, bytes]) -> None:
    pin, data = pinned
    index = simple_index(tmp_path / "index", pin, data, listed_hash="0" * 64)
    with pytest.raises(fetch.FetchError, match="the index lists sha256 0000"):
        fetch.obtain(pin, settings(index), tmp_path, tmp_path)


def test_a_download_that_is_not_the_pinned_archive_is_refused(tmp_path: Path, pinned: tuple[dict, bytes]) -> None:
    pin, data = pinned
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / NAME).write_bytes(b"truncated")
    s = settings(find_links=(str(tmp_path / "links"),))
    with pytest.raises(fetch.FetchError, match="sha256 mismatch"):
        fetch.obtain(pin, s, tmp_path, tmp_path)


class _Index(http.server.BaseHTTPRequestHandler):
    """A PEP 691 JSON index behind Basic authentication."""

    archive: bytes = b""
    pin: dict = {}
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"me:s3cret").decode():
            self.send_error(401)
            return
        if self.path == "/simple/llama-cpp-python/":
            body = json.dumps({"meta": {"api-version": "1.0"}, "name": "llama-cpp-python", "files": [
                {"filename": self.pin["archive"], "url": f"/files/{self.pin['archive']}",
                 "hashes": {"sha256": self.pin["sha256"]}}]}).encode()
            ctype = fetch.SIMPLE_JSON
        elif self.path == f"/files/{self.pin['archive']}":
            body, ctype = self.archive, "application/gzip"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_index(pinned: tuple[dict, bytes]) -> Iterator[str]:
    pin, data = pinned
    handler = type("Handler", (_Index,), {"archive": data, "pin": pin, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://me:s3cret@127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_json_index_with_credentials(tmp_path: Path, pinned: tuple[dict, bytes], http_index: str) -> None:
    pin, data = pinned
    got = fetch.obtain(pin, settings(http_index), tmp_path, tmp_path)
    assert got.read_bytes() == data
    wrong = {**pin, "archive": "llama_cpp_python-0.0.1.tar.gz"}
    with pytest.raises(fetch.FetchError) as exc:
        fetch.obtain(wrong, settings(http_index), tmp_path, tmp_path)
    assert "s3cret" not in str(exc.value) and "me:***@127.0.0.1" in str(exc.value)


# ---- unpacking and the command ---------------------------------------------------------------

def test_main_unpacks_what_the_build_needs(tmp_path: Path, pinned: tuple[dict, bytes]) -> None:
    pin, data = pinned
    pin_file = tmp_path / "pin.toml"
    pin_file.write_text("".join(f'{k} = "{v}"\n' for k, v in pin.items()))
    archive = tmp_path / NAME
    archive.write_bytes(data)
    target = tmp_path / "vendor" / "llama.cpp"
    argv = ["--pin", str(pin_file), "--target", str(target), "--archive", str(archive)]
    assert fetch.main(argv) == 0
    assert (target / "CMakeLists.txt").is_file() and (target / "src" / "llama.cpp").is_file()
    assert not (target / "docs").exists()
    assert fetch.is_current(target, pin)


def test_an_archive_without_the_tree_unpacks_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fake_archive(with_tree=False)
    pin_file = tmp_path / "pin.toml"
    pin_file.write_text(f'package = "llama-cpp-python"\nversion = "9.9.9"\narchive = "{NAME}"\n'
                        f'sha256 = "{hashlib.sha256(data).hexdigest()}"\nllama_cpp_commit = "abc1234"\n')
    (tmp_path / NAME).write_bytes(data)
    target = tmp_path / "vendor" / "llama.cpp"
    code = fetch.main(["--pin", str(pin_file), "--target", str(target), "--archive", str(tmp_path / NAME)])
    err = capsys.readouterr().err
    assert code == 1 and "holds no" in err and len(err.strip().splitlines()) == 1
    assert not target.exists() and not list(target.parent.glob(".llama.cpp-*"))


def test_nowhere_to_look_is_one_line(tmp_path: Path, pinned: tuple[dict, bytes]) -> None:
    pin, _ = pinned
    with pytest.raises(fetch.FetchError, match="no index, no find-links"):
        fetch.obtain(pin, settings(), tmp_path, tmp_path)


# ---- the build's own checks -----------------------------------------------------------------

CMAKE = shutil.which("cmake")


def configure(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """CMake's configure step on a copy of CMakeLists.txt and vendor/ without llama.cpp."""
    src = tmp_path / "src"
    (src / "vendor").mkdir(parents=True)
    shutil.copy2(ROOT / "CMakeLists.txt", src)
    for name in ("fetch.py", "pin.toml"):
        shutil.copy2(VENDOR / name, src / "vendor")
    return subprocess.run([CMAKE or "cmake", "-S", str(src), "-B", str(tmp_path / "build"), *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


def reason(r: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in r.stdout.splitlines() + r.stderr.splitlines() if line.startswith("a3s-power: ")]
    assert r.returncode != 0 and lines, r.stdout + r.stderr
    return lines[0]


@pytest.mark.skipif(CMAKE is None, reason="no cmake")
def test_a_missing_compiler_is_one_line(tmp_path: Path) -> None:
    line = reason(configure(tmp_path, CC="/nonexistent/cc", CXX="/nonexistent/c++"))
    assert re.fullmatch(r"a3s-power: no C compiler found: .*", line)


@pytest.mark.skipif(CMAKE is None, reason="no cmake")
def test_cuda_without_the_toolkit_is_one_line(tmp_path: Path) -> None:
    line = reason(configure(tmp_path, "-DPOWER_CUDA=ON", CUDACXX="/nonexistent/nvcc"))
    assert "POWER_CUDA=ON needs the CUDA toolkit" in line


@pytest.mark.skipif(CMAKE is None, reason="no cmake")
def test_a_corrupted_archive_stops_cmake_with_one_line(tmp_path: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    (links / fetch.load_pin()["archive"]).write_bytes(b"corrupted")
    r = configure(tmp_path, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    line = reason(r)
    assert "cannot obtain the pinned llama.cpp source" in line and "sha256 mismatch" in line
    assert not (tmp_path / "src" / "vendor" / "llama.cpp").exists()
