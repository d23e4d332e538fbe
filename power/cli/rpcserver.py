"""``rpc-server``: serve this machine's devices to llama.cpp RPC clients (runners on other machines).

The same RPC server as llama.cpp's ``rpc-server`` tool, from this installation's own build, so both
ends speak one protocol version. Point a server's ``A3S_POWER_RPC_SERVERS`` (or ``OLLAMA_RPC_SERVERS``)
at it and that server's runners put model layers here.
"""

from __future__ import annotations

import argparse
import os
import signal

from power.cli.context import Context
from power.errors import InvalidRequest, PowerError

__all__ = ["cmd_rpc_server", "default_threads"]


# llama.cpp's rpc-server says this whenever it is not bound to 127.0.0.1.
WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
WARNING: Host ('{host}') is != '127.0.0.1'
         Never expose the RPC server to an open network!
         This is an experimental feature and is not secure!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def default_threads() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.")


def cmd_rpc_server(args: argparse.Namespace, ctx: Context) -> int:
    host = args.host.strip()
    if not host or ":" in host:
        raise InvalidRequest(f"--host {args.host!r}: give an IPv4 address or a host name (the RPC server is IPv4)")
    if not 0 < args.port < 65536:
        raise InvalidRequest(f"--port {args.port}: use 1..65535")
    if args.threads is not None and args.threads < 1:
        raise InvalidRequest(f"--threads {args.threads}: use 1 or more")
    if args.mem is not None and args.mem < 1:
        raise InvalidRequest(f"--mem {args.mem}: use 1 MiB or more")
    if not _loopback(host):
        ctx.err.write(WARNING.format(host=host) + "\n")
        ctx.err.flush()
    try:
        from power import native  # this process serves devices: it loads llama.cpp itself
    except ImportError as exc:
        raise PowerError(f"the native libraries are not available in this installation: {exc}") from exc
    if not native.supports_rpc():
        raise PowerError("this build has no RPC backend: rebuild with POWER_RPC=ON")
    ctx.out.flush()
    # The server runs in C until the process ends: Ctrl-C and SIGTERM end it at once.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    native.rpc_serve(f"{host}:{args.port}", args.threads or default_threads(),
                     (args.mem or 0) << 20, args.cache or None)
    return 1  # rpc_serve returns only by raising
