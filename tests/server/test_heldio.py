"""power/server/heldio.py: the event loop's socket calls and epoll poll made with the GIL held."""

from __future__ import annotations

import selectors
import socket
import sys
import threading

import pytest

from power.server.heldio import HeldEpollSelector, HeldIO, held_selector

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll and libc: Linux")


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_recv_and_send_as_the_socket_methods(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    io = HeldIO.open()
    assert io is not None
    with pytest.raises(BlockingIOError):
        io.recv(a)  # nothing there: as a non-blocking socket's recv
    data = bytes(range(256)) * 10
    assert io.send(b, data) == len(data)
    assert io.send(b, data, 2000) == len(data) - 2000  # from an offset
    got = io.recv(a)
    assert got == data + data[2000:]
    big = b"x" * (8 << 20)
    sent = 0
    with pytest.raises(BlockingIOError):  # the buffers fill up: what a partial send becomes
        while True:
            sent += io.send(b, big, sent)
    assert 0 < sent < len(big)
    b.close()
    received = 0
    while chunk := io.recv(a):  # what was sent, then b"" at the end of the stream
        received += len(chunk)
    assert received == sent


def test_send_to_a_closed_peer_raises_instead_of_killing_the_process(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    io = HeldIO.open()
    assert io is not None
    with pytest.raises(OSError) as err:  # EPIPE, without SIGPIPE
        io.send(b, b"hello")
    assert not isinstance(err.value, BlockingIOError)


def test_selector_reports_what_epoll_reports(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sel = held_selector()
    assert isinstance(sel, HeldEpollSelector)
    sel.register(a, selectors.EVENT_READ, "a-read")
    sel.register(b, selectors.EVENT_READ | selectors.EVENT_WRITE, "b-both")
    ready = {key.data: events for key, events in sel.select(0)}
    assert ready == {"b-both": selectors.EVENT_WRITE}  # nothing to read yet; b can write
    b.send(b"ping")
    ready = {key.data: events for key, events in sel.select(0)}
    assert ready == {"a-read": selectors.EVENT_READ, "b-both": selectors.EVENT_WRITE}
    sel.unregister(b)
    a.recv(10)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.extend(k.data for k, _ in sel.select(5)))
    waiter.start()  # nothing ready: it waits (the GIL released) until something is
    b.send(b"pong")
    waiter.join(5)
    assert got == ["a-read"]
    sel.close()
