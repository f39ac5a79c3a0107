"""How `barenet serve` and `barenet dashboard` run uvicorn: idle and slow clients cannot deny
service, and 503 means real load.

uvicorn's own `limit_concurrency` counts open connections, and its h11 protocol sets no deadline
before a connection's first request, so 63 sockets that never send a byte answered everyone
else 503 forever. Here, as nginx and h2o do it: deadlines per connection (the head of each
request within HEADER_TIMEOUT, its body within BODY_TIMEOUT), the oldest idle connections
closed first when there are too many, and the 503 limit counts requests at work only.
"""

from __future__ import annotations

import asyncio
import resource

from uvicorn.protocols.http.h11_impl import H11Protocol

from .asgi import send_error

HEADER_TIMEOUT = 10.0  # s for a request's head, from the connect or the previous answer
BODY_TIMEOUT = 15.0  # s for a request's body, from its head; then 408 and the connection closes
REQUEST_TIMEOUT = 60.0  # s for the whole request, answer included (a client that never reads)
MAX_IN_FLIGHT = 64  # requests at work (body received) at once; more are answered 503
MAX_CONNECTIONS = 1000  # open connections; above, the longest-idle one is closed


def _connection_cap() -> int:
    """MAX_CONNECTIONS, or fewer when the file-descriptor limit would be reached first."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - 64))  # descriptors left for files and threads


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on every request and a cap on idle connections.

    One timer per connection: armed for HEADER_TIMEOUT when it opens or an answer completes
    (unlike the keep-alive timer, bytes that trickle in do not push it back: slowloris), and
    re-armed for REQUEST_TIMEOUT once a complete request head arrives. When it fires, the
    connection is closed; the request's task sees a disconnect.
    """

    max_connections = _connection_cap()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._seen = None  # the request cycle the deadline was last armed for
        self._idle_since: float | None = self.loop.time()
        self._arm(HEADER_TIMEOUT)
        if len(self.connections) > self.max_connections:
            self._evict_idle()

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self._cancel()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_cycle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._follow_cycle():  # no pipelined request started: wait for the next head
            self._idle_since = self.loop.time()
            self._arm(HEADER_TIMEOUT)

    def _follow_cycle(self) -> bool:
        """Re-arm for REQUEST_TIMEOUT when a new request's head has arrived."""
        if self.cycle is None or self.cycle is self._seen or self.cycle.response_complete:
            return False
        self._seen = self.cycle
        self._idle_since = None
        self._arm(REQUEST_TIMEOUT)
        return True

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _cancel(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _evict_idle(self) -> None:
        """Close the connection idle the longest (this new one too, if nothing else is idle)."""
        idle = [c for c in self.connections if getattr(c, "_idle_since", None) is not None
                and c is not self and not c.transport.is_closing()]
        victim = min(idle, key=lambda c: c._idle_since) if idle else self
        victim.transport.close()


class Admission:
    """ASGI middleware: a request's body must arrive within BODY_TIMEOUT (else 408), and at
    most `limit` requests are at work at once (else 503 with Retry-After).

    The body is received before the request counts, so clients that send slowly occupy a
    connection, not a place among the requests at work. Bodies are still bounded by the app's
    own limit: reading stops once more than `max_body` bytes have arrived.
    """

    def __init__(self, app, *, limit: int = MAX_IN_FLIGHT, max_body: int = 16 * 1024 * 1024,
                 body_timeout: float | None = None):
        self.app, self.limit, self.max_body = app, limit, max_body
        self.body_timeout = BODY_TIMEOUT if body_timeout is None else body_timeout
        self.at_work = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        try:
            while size <= self.max_body:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
                received.append(message)
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
                size += len(message.get("body", b""))
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            return await send_error(send, 408, f"request body not received within "
                                               f"{self.body_timeout:g} s", close=True)
        if self.at_work >= self.limit:
            return await send_error(send, 503, f"server busy: {self.at_work} requests in "
                                               f"progress; retry in a moment",
                                    headers=[(b"retry-after", b"1")])

        async def replay():
            return received.pop(0) if received else await receive()

        self.at_work += 1
        try:
            await self.app(scope, replay, send)
        finally:
            self.at_work -= 1


def uvicorn_server(app, *, max_body: int = 16 * 1024 * 1024, limit: int = MAX_IN_FLIGHT):
    """A uvicorn.Server for `app` with the deadlines and limits above (run it on a socket)."""
    import uvicorn

    config = uvicorn.Config(Admission(app, limit=limit, max_body=max_body),
                            http=DeadlineProtocol, log_level="warning", timeout_keep_alive=5,
                            server_header=False, backlog=1024)
    return uvicorn.Server(config)
