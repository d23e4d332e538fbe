#!/usr/bin/env python3
"""Obtain the pinned llama.cpp source into vendor/llama.cpp/.

The pinned source archive is looked for in vendor/ (a cache, ignored by git),
then in pip's find-links, then on the package indexes pip is configured with
(pip.conf, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL; PyPI by default). It is
downloaded with the standard library only: the build runs in pip's isolated
environment, where pip itself is not importable. The archive's sha256 is
checked against vendor/pin.toml before anything is unpacked, and the tree is
unpacked beside the target and renamed into place, so a failure leaves either
the old tree or none. Every failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import hashlib
import html.parser
import json
import os
import re
import shutil
import ssl
import sys
import tarfile
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPI = "https://pypi.org/simple"
# Parts of the llama.cpp tree that nothing here builds or reads.
SKIP_TOP = {".git", ".github", ".devops", "docs", "media", "benches", "examples/llama.android",
            "examples/llama.swiftui"}
STAMP = ".power-pin"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


class FetchError(Exception):
    """The pinned archive could not be obtained or unpacked; the message is the one line shown."""


@dataclass(frozen=True)
class PipSettings:
    """Where pip would look for a distribution: its indexes and find-links, and how it connects."""

    indexes: tuple[str, ...] = (PYPI,)
    find_links: tuple[str, ...] = ()
    cert: str | None = None
    timeout: float = 60.0


class _Links(html.parser.HTMLParser):
    """The ``<a href>`` targets of a PEP 503 page or a find-links listing."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def load_pin(path: Path = HERE / "pin.toml") -> dict:
    return tomllib.loads(path.read_text())


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- pip's configuration ----------------------------------------------------

def pip_config_files(environ: dict[str, str]) -> list[Path]:
    """pip's configuration files, lowest priority first (global, user, site, PIP_CONFIG_FILE)."""
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (env_file and Path(env_file).exists()):
        home = Path(environ.get("HOME") or Path.home())
        files.append(home / ".pip" / "pip.conf")
        files.append(Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf")
    # pip's site file; pip's isolated build environment keeps the prefix of the interpreter pip runs in.
    files.append(Path(sys.prefix) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def pip_settings(environ: dict[str, str] | None = None, files: list[Path] | None = None) -> PipSettings:
    """Read pip's index settings as ``pip install`` would: files' [global] then [install], then PIP_* variables."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, str] = {}
    for path in pip_config_files(environ) if files is None else files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise FetchError(f"cannot read pip configuration {path}: {exc}") from exc
        for section in ("global", "install"):
            if parser.has_section(section):
                values.update({k.replace("_", "-"): v for k, v in parser.items(section)})
    for key, value in environ.items():
        if key.startswith("PIP_"):
            values[key[4:].lower().replace("_", "-")] = value
    if values.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        indexes: list[str] = []
    else:
        indexes = [values.get("index-url") or PYPI, *values.get("extra-index-url", "").split()]
    try:
        timeout = float(values.get("timeout") or values.get("default-timeout") or 60)
    except ValueError:
        timeout = 60.0
    return PipSettings(indexes=tuple(indexes), find_links=tuple(values.get("find-links", "").split()),
                       cert=values.get("cert") or None, timeout=timeout)


# ---- reading indexes ---------------------------------------------------------

def _request(url: str) -> urllib.request.Request:
    """A request for ``url``, its user:password@ moved into a Basic Authorization header."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": f"{SIMPLE_JSON}, text/html;q=0.1", "User-Agent": "a3s-power-vendor-fetch"}
    if parts.username is not None:
        creds = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urllib.request.Request(urllib.parse.urlunsplit(parts), headers=headers)


def shown(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _open(url: str, settings: PipSettings):  # -> a file-like response
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        if path.is_dir():
            # pip reads a local index's directory page from its index.html, as a web server would.
            url = (path / "index.html").as_uri()
    ctx = ssl.create_default_context(cafile=settings.cert) if settings.cert else None
    return urllib.request.urlopen(_request(url), timeout=settings.timeout, context=ctx)


def _links_in(url: str, settings: PipSettings) -> list[tuple[str, str, str | None]]:
    """(filename, absolute url, sha256 or None) for every file a simple-API page or listing names."""
    with _open(url, settings) as resp:
        body = resp.read()
        ctype = resp.headers.get("Content-Type", "") if resp.headers else ""
    if ctype.startswith(SIMPLE_JSON):
        return [(f["filename"], urllib.parse.urljoin(url, f["url"]), f.get("hashes", {}).get("sha256"))
                for f in json.loads(body)["files"]]
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    out = []
    for href in parser.hrefs:
        full, _, frag = urllib.parse.urljoin(url, href).partition("#")
        name = urllib.parse.unquote(full.rstrip("/").rsplit("/", 1)[-1])
        digest = frag[len("sha256="):] if frag.startswith("sha256=") else None
        out.append((name, full, digest))
    return out


def project_url(index: str, package: str) -> str:
    """The PEP 503 page of ``package`` on ``index`` (the name normalised)."""
    return index.rstrip("/") + "/" + re.sub(r"[-_.]+", "-", package).lower() + "/"


def candidates(pin: dict, settings: PipSettings) -> tuple[list[str], list[str]]:
    """URLs that may hold the pinned archive, in pip's order (find-links, then indexes), and why others did not."""
    found: list[str] = []
    misses: list[str] = []
    pages = []
    for link in settings.find_links:
        if "://" not in link:  # a local folder (or file) of archives
            path = Path(link).expanduser() / pin["archive"]
            if path.is_file():
                found.append(path.as_uri())
            continue
        pages.append(link)
    pages += [project_url(index, pin["package"]) for index in settings.indexes]
    for page in pages:
        try:
            links = _links_in(page, settings)
        except (OSError, ValueError, KeyError) as exc:  # URLError is an OSError
            misses.append(f"{shown(page)}: {getattr(exc, 'reason', exc)}")
            continue
        for name, url, digest in links:
            if name != pin["archive"]:
                continue
            if digest and digest != pin["sha256"]:
                misses.append(f"{shown(url)}: the index lists sha256 {digest}, not the pinned {pin['sha256']}")
                continue
            found.append(url)
    return found, misses


def download(url: str, dest: Path, settings: PipSettings) -> None:
    """Copy ``url`` into ``dest``."""
    with _open(url, settings) as resp, dest.open("wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)


def obtain(pin: dict, settings: PipSettings, cache: Path, workdir: Path) -> Path:
    """The pinned archive, checked: from ``cache`` if it is good there, else downloaded and cached."""
    cached = cache / pin["archive"]
    if cached.is_file():
        if sha256_of(cached) == pin["sha256"]:
            return cached
        print(f"vendor/fetch.py: ignoring {cached}: its sha256 is not the pinned one")
    urls, misses = candidates(pin, settings)
    for url in urls:
        got = workdir / pin["archive"]
        try:
            download(url, got, settings)
        except OSError as exc:
            misses.append(f"{shown(url)}: {getattr(exc, 'reason', exc)}")
            continue
        digest = sha256_of(got)
        if digest != pin["sha256"]:
            misses.append(f"{shown(url)}: sha256 mismatch: expected {pin['sha256']}, got {digest}")
            continue
        try:
            tmp = cached.with_name(cached.name + ".part")
            shutil.copyfile(got, tmp)
            os.replace(tmp, cached)  # cache for rebuilds (ignored by git)
            return cached
        except OSError:
            return got  # a read-only source tree still builds
    where = ", ".join(shown(u) for u in (*settings.find_links, *settings.indexes))
    where = where or "nowhere (no index, no find-links)"
    detail = "; ".join(misses) if misses else "no index lists it"
    raise FetchError(f"no copy of {pin['archive']} with the pinned sha256 {pin['sha256'][:12]}... in {cache} "
                     f"or at {where}: {detail}")


# ---- unpacking -------------------------------------------------------------------

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
    target.parent.mkdir(parents=True, exist_ok=True)
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
            if not any(m.name == "CMakeLists.txt" for m in members):
                raise FetchError(f"{archive} holds no {prefix}CMakeLists.txt: not the llama-cpp-python source")
            tar.extractall(tmp, members=members, filter="data")
        (tmp / STAMP).write_text(f"{pin['sha256']} {pin['llama_cpp_commit']}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise FetchError(f"cannot unpack {archive}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_current(target: Path, pin: dict) -> bool:
    stamp = target / STAMP
    return stamp.is_file() and stamp.read_text().split()[:2] == [pin["sha256"], pin["llama_cpp_commit"]]


def run(args: argparse.Namespace) -> str:
    pin = load_pin(args.pin)
    target = args.target
    if is_current(target, pin) and not args.force:
        return f"vendor/llama.cpp is current ({pin['llama_cpp_commit']})"
    with tempfile.TemporaryDirectory() as d:
        if args.archive:
            archive = args.archive
            digest = sha256_of(archive)
            if digest != pin["sha256"]:
                raise FetchError(f"sha256 mismatch for {archive}: expected {pin['sha256']}, got {digest}; "
                                 "refusing to build from an archive that is not the pinned one")
        else:
            archive = obtain(pin, pip_settings(), args.cache, Path(d))
        unpack(archive, pin, target)
    return f"unpacked llama.cpp {pin['llama_cpp_commit']} into {target}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, help="use this archive instead of looking for one")
    ap.add_argument("--force", action="store_true", help="unpack again even if current")
    ap.add_argument("--pin", type=Path, default=HERE / "pin.toml", help=argparse.SUPPRESS)
    ap.add_argument("--target", type=Path, default=HERE / "llama.cpp", help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        print(run(args))
    except FetchError as exc:
        print(f"vendor/fetch.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
