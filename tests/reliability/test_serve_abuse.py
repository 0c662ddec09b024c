"""A hostile HTTP client against a real server on the loopback: slow uploads and half-open
connections are cut off at the deadline, open connections stay bounded, and the server keeps
answering. Every loop here is bounded."""

import json
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from headstart.model import open_model
from headstart.serve import ServeConfig, create_app, server_config

TIMEOUT = 1.0
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run


@pytest.fixture
def server(run: Path):
    import uvicorn

    config = ServeConfig(timeout_s=TIMEOUT, max_connections=MAX_CONNECTIONS)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(server_config(create_app(open_model(run), config), "127.0.0.1", port, config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def closed_by_server(s: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``s`` within ``within`` seconds; None if still open."""
    s.settimeout(within)
    received = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return received
            received += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        return received


def health(port: int) -> int:
    with connect(port) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        reply = closed_by_server(s, 5) or b""
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1") else 0


def test_a_slow_upload_is_cut_off_at_the_deadline(server):
    with connect(server) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\n"
                  b"content-length: 100000\r\n\r\n--b\r\n")
        start = time.monotonic()
        reply = None
        for _ in range(int(10 * TIMEOUT / 0.1)):  # one byte every 0.1 s: 10 B/s, never finishing
            try:
                s.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            reply = closed_by_server(s, 0.1)
            if reply is not None:
                break
        elapsed = time.monotonic() - start
    assert elapsed < 3 * TIMEOUT, f"still open after {elapsed:.1f} s"
    assert reply is None or reply == b"" or b" 408 " in reply.split(b"\r\n")[0]
    assert health(server) == 200


@pytest.mark.parametrize("begun", [
    b"GET /health HTTP/1.1\r\nhost:",  # headers begun, never finished
    b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\n"
    b"content-length: 100000\r\n\r\n--b\r\n",  # a body begun, never finished
])
def test_a_request_not_finished_within_the_timeout_gets_408(server, begun: bytes):
    with connect(server) as s:
        s.sendall(begun)
        reply = closed_by_server(s, 3 * TIMEOUT)
    assert reply is not None and reply.split(b"\r\n")[0] == b"HTTP/1.1 408 Request Timeout"
    assert health(server) == 200


def test_an_idle_keep_alive_connection_is_closed_after_5_seconds(server):
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")  # keep-alive: HTTP/1.1's default
        s.settimeout(5)
        answer = s.recv(4096)
        start = time.monotonic()
        closed = closed_by_server(s, 8)
        idle = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 200") and closed is not None and 4 < idle < 7.5


def still_open(sockets: list[socket.socket], wait: float) -> list[socket.socket]:
    """The sockets the server has not closed: nothing to read on them (a closed one reads as EOF)."""
    readable, _, _ = select.select(sockets, [], [], wait)
    return [s for s in sockets if s not in readable or closed_by_server(s, 0.01) is None]


def test_slow_headers_and_idle_connections_are_closed_and_bounded(server):
    sockets = [connect(server) for _ in range(4 * MAX_CONNECTIONS)]
    try:
        sockets[0].sendall(b"GET /health HTTP/1.1\r\nhost:")  # headers begun, never finished
        time.sleep(0.3)
        held = still_open(sockets, 0.1)
        assert len(held) <= MAX_CONNECTIONS  # the connections beyond the bound are closed on arrival
        time.sleep(TIMEOUT)
        assert still_open(held, 0.5) == []  # and the others at the deadline
    finally:
        for s in sockets:
            s.close()
    assert health(server) == 200


def test_a_model_slower_than_the_timeout_gets_503(run: Path):
    from fastapi.testclient import TestClient

    from conftest import make_image

    model = open_model(run)
    run_model = model.run
    model.run = lambda batch: (time.sleep(2), run_model(batch))[1]
    image = make_image(run.parent / "x.png", (200, 40, 40)).read_bytes()
    with TestClient(create_app(model, ServeConfig(timeout_s=0.3))) as client:
        response = client.post("/predict", files=[("files", ("x.png", image, "image/png"))])
    assert response.status_code == 503 and "did not answer within 0.3 s" in response.json()["error"]


def test_as_many_clients_as_the_limit_are_all_answered(server):
    """max_connections clients at once, each with a request: every one answered (uvicorn's own limit
    answered the last with a plain-text 503), and the server still healthy after."""
    sockets = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # every connection open before any request
        for s in sockets:
            s.sendall(b"GET /model HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        replies = [closed_by_server(s, 10) or b"" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    assert [r.split(b"\r\n")[0] for r in replies] == [b"HTTP/1.1 200 OK"] * MAX_CONNECTIONS
    assert health(server) == 200


def error_of(reply: bytes) -> tuple[bytes, str]:
    """A raw reply's status line and its JSON error message."""
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)["error"]


@pytest.mark.parametrize("pieces", [1, 40])
def test_headers_past_64_kb_get_431_whether_they_arrive_whole_or_in_pieces(server, pieces: int):
    request = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    with connect(server) as s:
        size = -(-len(request) // pieces)
        try:
            for start in range(0, len(request), size):
                s.sendall(request[start:start + size])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the rest arrived
        reply = closed_by_server(s, 5)
    assert reply is not None
    status, message = error_of(reply)
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large" and "64 kB" in message
    assert health(server) == 200


def test_at_the_connection_limit_idle_keep_alive_connections_make_room(server):
    """A burst of keep-alive clients leaves every connection open: a new client (a health check)
    is still answered, by closing one that waits for its next request. When every connection is
    busy, a new one gets a JSON 503 at once rather than a reset."""
    idle = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        for s in idle:
            s.sendall(b"GET /model HTTP/1.1\r\nhost: x\r\n\r\n")
            s.settimeout(5)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        assert health(server) == 200
        assert health(server) == 200
    finally:
        for s in idle:
            s.close()
    busy = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        for s in busy:
            s.sendall(b"GET /health HTTP/1.1\r\nhost:")  # each in the middle of its request
        time.sleep(0.2)
        with connect(server) as s:
            status, message = error_of(closed_by_server(s, 0.5 * TIMEOUT) or b"")
        assert status == b"HTTP/1.1 503 Service Unavailable" and "connections open" in message
    finally:
        for s in busy:
            s.close()
    assert health(server) == 200


def test_a_malformed_request_gets_a_json_400(server):
    with connect(server) as s:
        s.sendall(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        status, message = error_of(closed_by_server(s, 5) or b"")
    assert status == b"HTTP/1.1 400 Bad Request" and "HTTP" in message
