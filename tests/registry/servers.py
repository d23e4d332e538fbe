"""Real servers on loopback for the registry tests: docker-registry, nginx, and small ones of our own."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install {binary})")
    return path


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class TokenServer:
    """Issues ES256 JWTs that docker-registry trusts (its cert is the registry's root bundle)."""

    cert_pem: bytes
    key: Any
    cert_der: bytes
    issuer: str = "a3s-test-issuer"
    service: str = "a3s-test-registry"
    requests: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def create(cls) -> TokenServer:
        crypto = pytest.importorskip("cryptography")
        del crypto
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a3s-test-token")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(cert.public_bytes(serialization.Encoding.PEM), key,
                   cert.public_bytes(serialization.Encoding.DER))

    def issue(self, scope: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).decode().rstrip("=")

        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            repo, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": repo, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": self.issuer, "sub": "tester", "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": str(now), "access": access}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def handler(self) -> Callable[[BaseHTTPRequestHandler], None]:
        def handle(req: BaseHTTPRequestHandler) -> None:
            query = {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}
            self.requests.append({**query, "authorization": req.headers.get("Authorization", "")})
            body = json.dumps({"token": self.issue(query.get("scope", ""))}).encode()
            req.send_response(200)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body)
        return handle


class Scripted:
    """A tiny threaded HTTP server whose every request is answered by ``handle(request)``."""

    def __init__(self, handle: Callable[[BaseHTTPRequestHandler], None], host: str = "127.0.0.1") -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                outer.paths.append(f"{self.command} {self.path}")
                try:
                    handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any

        self.paths: list[str] = []
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def docker_registry(tmp: Path, token: TokenServer | None = None,
                    token_url: str = "") -> Iterator[str]:
    """Run docker-registry on a free port; yield its base URL."""
    binary = need("docker-registry")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
              "storage:", "  filesystem:", f"    rootdirectory: {tmp / 'data'}", "  delete:", "    enabled: true",
              "http:", f"  addr: 127.0.0.1:{port}"]
    if token is not None:
        (tmp / "root.pem").write_bytes(token.cert_pem)
        config += ["auth:", "  token:", f"    realm: {token_url}/token", f"    service: {token.service}",
                   f"    issuer: {token.issuer}", f"    rootcertbundle: {tmp / 'root.pem'}"]
    (tmp / "config.yml").write_text("\n".join(config) + "\n")
    with open(tmp / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(tmp / "config.yml")], stdout=log, stderr=log)
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@dataclass
class Nginx:
    url: str
    root: Path
    access_log: Path

    def bytes_sent(self) -> list[int]:
        """Body bytes of each logged request, in order."""
        if not self.access_log.exists():
            return []
        return [int(line.split()[-1]) for line in self.access_log.read_text().splitlines() if line.strip()]


def nginx_conf(tmp: Path, http: str, connections: int = 64) -> str:
    """A whole nginx.conf running in the foreground with every path under ``tmp``, around ``http``'s block."""
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read files in a private tmp dir
    return f"""
{user}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
{http}
}}
"""


def nginx(tmp: Path, limit_rate: str = "") -> Iterator[Nginx]:
    """Serve ``tmp/www`` with nginx on a free port; ``limit_rate`` slows every response."""
    binary = need("nginx")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = tmp / "www"
    root.mkdir(exist_ok=True)
    access = tmp / "access.log"
    rate = f"limit_rate {limit_rate};" if limit_rate else ""
    conf = nginx_conf(tmp, f"""
  log_format bytes '$request_method $status $body_bytes_sent';
  access_log {access} bytes;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ {rate} }}
  }}
""")
    (tmp / "nginx.conf").write_text(conf)
    with open(tmp / "nginx.out", "wb") as out:
        proc = subprocess.Popen([binary, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], stdout=out, stderr=out)
    try:
        wait_port(port, proc)
        yield Nginx(f"http://127.0.0.1:{port}", root, access)
    finally:
        stop(proc)
