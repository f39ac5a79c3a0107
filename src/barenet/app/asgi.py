"""What `barenet serve` and `barenet dashboard` share below their apps, without uvicorn: the
JSON error a middleware answers, the request-body limit and the listening socket.

uvicorn itself (deadlines, admission) is in serving.py; keeping it out of here means building
an app (server.create_app, as the tests do) does not import it.
"""

from __future__ import annotations

import ipaddress
import json
import socket

from fastapi import HTTPException


async def send_error(send, status: int, message: str, *, close: bool = False,
                     headers: list | None = None) -> None:
    """Answer {"error": message} from ASGI middleware (no route, no exception handler)."""
    body = json.dumps({"error": message}).encode()
    head = [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), *(headers or [])]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, size: int | None = None):
        got = f" ({size:,} bytes)" if size is not None else ""
        super().__init__(413, f"request body too large{got}: the limit is {limit:,} bytes")


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes without reading them whole.

    A declared Content-Length over the limit is answered 413 before any byte is read; without
    one (chunked), bytes are counted as they arrive and reading stops at the limit. (uvicorn
    then discards the rest as it arrives, without keeping it, so the client gets the answer;
    closing at once would reset the connection and lose the 413.)
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await send_error(send, 400, "malformed Content-Length header")
            if size > self.limit:
                return await send_error(send, 413, str(BodyTooLarge(self.limit, size).detail))
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # raised outside a route's exception handling
            if not started:
                await send_error(send, 413, str(exc.detail))


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port: a browser that connects as soon as the URL is printed
    waits in the backlog while uvicorn starts, instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    sock.listen(128)
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
