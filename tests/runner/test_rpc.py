"""A model split over real ``a3s-power rpc-server`` processes on loopback and the local CPU.

The runners are real processes, each RPC server a real process serving its CPU: greedy output must be
token-for-token that of the local-only load, a server killed mid-stream ends only that stream, and a
server that does not answer never hangs a load.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from power.errors import RpcUnreachable
from power.runner import RunnerCrashed, Scheduler
from tests.rpcservers import RpcServerProcess, running_servers
from tests.server.live import free_port

GREEDY = {"num_predict": 24, "temperature": 0}
PROMPT = "the quick brown fox jumps over"


# Requested before make_scheduler by each test, so the servers outlive the runners that use them.
@pytest.fixture
def rpc_servers(tmp_path: Path) -> Iterator[list[RpcServerProcess]]:
    yield from running_servers(tmp_path)


def endpoints(servers: list[RpcServerProcess]) -> tuple[str, ...]:
    return tuple(s.endpoint for s in servers)


def test_split_over_two_servers_matches_local_output(rpc_servers: list[RpcServerProcess],
                                                     make_scheduler: Callable[..., Scheduler]) -> None:
    local = make_scheduler()
    want = local.generate("tiny", PROMPT, options=GREEDY).result()
    [local_row] = local.ps()
    local.close(deadline=2.0)
    split = make_scheduler(rpc_servers=endpoints(rpc_servers))
    # 3 of the 4 layers go to the two servers (split by their free memory), 1 stays on the CPU.
    got = split.generate("tiny", PROMPT, options={**GREEDY, "num_gpu": 3}).result()
    assert got["tokens"] == want["tokens"] and len(got["tokens"]) == 24
    [row] = split.ps()
    assert local_row["size_vram"] == 0
    assert 0 < row["size_vram"] < row["size"] and row["processor"].endswith("CPU/GPU"), row
    # Every layer remote by default (num_gpu unset): still the same tokens.
    split.unload("tiny")
    again = split.generate("tiny", PROMPT, options=GREEDY).result()
    assert again["tokens"] == want["tokens"]


def test_rpc_server_killed_mid_stream_ends_that_stream_and_the_next_request_is_served(
        rpc_servers: list[RpcServerProcess], make_scheduler: Callable[..., Scheduler],
        caplog: pytest.LogCaptureFixture) -> None:
    sched = make_scheduler(rpc_servers=endpoints(rpc_servers))
    stream = sched.generate("tiny", PROMPT, options={"num_predict": 100000, "temperature": 0})
    next(stream)
    rpc_servers[1].kill()
    t0 = time.monotonic()
    with pytest.raises(RunnerCrashed):
        for _ in stream:
            pass
    assert time.monotonic() - t0 < 30
    # The next load leaves the dead server out (the model fits here) and says so.
    with caplog.at_level(logging.WARNING, logger="power.runner.scheduler"):
        again = sched.generate("tiny", PROMPT, options=GREEDY).result()
    assert again["done_reason"] == "length" and len(again["tokens"]) == 24
    assert any("unreachable RPC servers" in r.getMessage() and rpc_servers[1].endpoint in r.getMessage()
               for r in caplog.records)


def test_unreachable_server_loads_locally_when_the_model_fits(make_scheduler: Callable[..., Scheduler],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    dead = f"127.0.0.1:{free_port()}"
    sched = make_scheduler(rpc_servers=(dead,))
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="power.runner.scheduler"):
        out = sched.generate("tiny", PROMPT, options=GREEDY).result()
    assert time.monotonic() - t0 < 20
    assert len(out["tokens"]) == 24
    [row] = sched.ps()
    assert row["size_vram"] == 0 and row["processor"] == "100% CPU"
    assert any("local devices only" in r.getMessage() and dead in r.getMessage() for r in caplog.records)


def test_unreachable_server_is_a_clear_load_error_when_the_model_does_not_fit_here(
        make_scheduler: Callable[..., Scheduler]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    mib = 1 << 20
    sched = make_scheduler(rpc_servers=(dead,), kwargs={"meminfo": lambda: (300 * mib, 300 * mib)})
    t0 = time.monotonic()
    with pytest.raises(RpcUnreachable, match=f"RPC server {dead} is unreachable.*GiB here without it") as info:
        sched.generate("tiny", PROMPT, options=GREEDY)
    assert info.value.status == 502 and time.monotonic() - t0 < 10
    assert sched.ps() == []


def test_a_server_that_accepts_but_never_answers_does_not_hang_the_load(
        make_scheduler: Callable[..., Scheduler], caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as silent:  # connections queue in its backlog and get no answer, like a busy server
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        sched = make_scheduler(rpc_servers=(endpoint,))
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="power.runner.scheduler"):
            out = sched.generate("tiny", PROMPT, options=GREEDY).result()
        assert len(out["tokens"]) == 24 and time.monotonic() - t0 < 20
    assert any("did not answer within" in r.getMessage() for r in caplog.records)


def test_a_malformed_server_list_is_a_clear_error(make_scheduler: Callable[..., Scheduler]) -> None:
    sched = make_scheduler(rpc_servers=("localhost",))
    with pytest.raises(Exception, match="A3S_POWER_RPC_SERVERS: RPC server 'localhost' is not host:port"):
        sched.generate("tiny", PROMPT, options=GREEDY)


def test_both_setting_names_list_servers_and_ours_wins(tmp_path: Path) -> None:
    from power.config import load_settings

    home = {"A3S_POWER_HOME": str(tmp_path)}
    assert load_settings(home).rpc_servers == ()
    assert load_settings({**home, "OLLAMA_RPC_SERVERS": " 10.0.0.2:50052, ,10.0.0.3:50052"}).rpc_servers == (
        "10.0.0.2:50052", "10.0.0.3:50052")
    assert load_settings({**home, "OLLAMA_RPC_SERVERS": "a:1", "A3S_POWER_RPC_SERVERS": "b:2"}).rpc_servers == ("b:2",)
    (tmp_path / "config.toml").write_text('rpc_servers = ["c:3", "d:4"]\n')
    assert load_settings(home).rpc_servers == ("c:3", "d:4")


@pytest.mark.parametrize("bad", ["host", "host:", ":50052", "host:0", "host:65536", "host:port", "::1:50052"])
def test_parse_endpoints_names_the_bad_entry(bad: str) -> None:
    from power.engine.rpc import parse_endpoints

    assert parse_endpoints("a:1, b:2 ,a:1,") == ("a:1", "b:2")
    with pytest.raises(ValueError, match="is not host:port"):
        parse_endpoints(f"a:1,{bad}")
