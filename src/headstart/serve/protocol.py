"""What ``headstart serve`` adds below the application, to uvicorn's HTTP/1.1 protocol: a deadline
to receive each request (408), a bound on its header bytes (431), a bound on open connections
(503, after making room by closing a keep-alive connection that waits for its next request), and
the application's JSON error shape on each of these answers and on uvicorn's 400.
"""

from __future__ import annotations

import json
from http import HTTPStatus

__all__ = ["MAX_HEADER_BYTES", "raw_error", "deadline_protocol"]

# The request line and headers of one request; h11 bounds them only while they are incomplete.
MAX_HEADER_BYTES = 64 * 1024


def raw_error(status: int, message: str) -> bytes:
    """A whole response in the application's error shape, for answers given before it sees a request."""
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def deadline_protocol(timeout_s: float, max_connections: int):
    """uvicorn's HTTP/1.1 protocol, plus what it lacks: a deadline to receive each request, a
    bound on header bytes, and a bound on open connections (its ``limit_concurrency`` answers 503
    only to requests that arrive, so clients that never finish their headers would be held
    forever)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.deadline, self.head, self.requests = None, b"", 0
            open_now = [p for p in self.connections if not p.transport.is_closing()]
            if len(open_now) > max_connections and not self.make_room(open_now):
                self.refuse(raw_error(503, f"the server has {max_connections} connections open, its limit: "
                                       "retry shortly"))
                return
            self.arm()

        def make_room(self, open_now: list) -> bool:
            """Close one connection that is waiting for its next request (keep-alive): it has
            been answered, and its client reconnects when it has another."""
            idle = [p for p in open_now if p is not self and p.between_requests()]
            if idle:
                idle[0].transport.close()
            return bool(idle)

        def between_requests(self) -> bool:
            return (self.requests > 0 and not self.head and self.conn.their_state is h11.IDLE
                    and self.conn.our_state is h11.IDLE)

        def arm(self) -> None:
            if self.deadline is None:
                self.deadline = self.loop.call_later(timeout_s, self.too_slow)

        def disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def refuse(self, response: bytes) -> None:
            self.disarm()
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:  # a request's line and headers, or their first bytes
                self.arm()  # a new request on this connection: its own deadline
                self.requests += not self.head
                if self.headers_too_large(data):
                    self.refuse(raw_error(431, "the request's headers are larger than "
                                           f"{MAX_HEADER_BYTES // 1024} kB"))
                    return
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self.head = b""
            if self.conn.their_state is not h11.SEND_BODY and self.conn.their_state is not h11.IDLE:
                self.disarm()  # the request is in (or the connection is ending): the app takes over

        def headers_too_large(self, data: bytes) -> bool:
            # Only the first MAX_HEADER_BYTES (and the blank line's 4) are kept: enough to decide.
            self.head = (self.head + data[: MAX_HEADER_BYTES + 4])[: MAX_HEADER_BYTES + 4]
            end = self.head.find(b"\r\n\r\n")
            return end > MAX_HEADER_BYTES or (end < 0 and len(self.head) > MAX_HEADER_BYTES)

        def send_400_response(self, msg: str) -> None:  # uvicorn's is plain text
            self.refuse(raw_error(400, "not a valid HTTP/1.1 request"))

        def connection_lost(self, exc) -> None:
            self.disarm()
            super().connection_lost(exc)

        def too_slow(self) -> None:
            self.deadline = None
            if self.cycle is None or not self.cycle.response_started:
                self.refuse(raw_error(408, f"the request was not received within {timeout_s:g} s"))
            else:
                self.transport.close()

    return DeadlineProtocol
