"""The ASGI middleware around the routes: security headers, request and rate limits, HEAD, and
the one error shape for failures no route handled."""

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors

DOCS_PATHS = ("/docs", "/redoc", "/static-offline-docs")
# Swagger UI and ReDoc run from our own copies of their files, started by an inline script.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)
API_POLICY = "default-src 'none'; frame-ancestors 'none'"


class HTTPMiddleware:
    """A pure ASGI middleware that acts on HTTP requests (`handle`) and passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class SecurityHeaders(HTTPMiddleware):
    """nosniff, no referrer, and a Content-Security-Policy on every response: the docs pages
    may load their own scripts and styles; JSON and CSV may load nothing."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = DOCS_POLICY if scope["path"].startswith(DOCS_PATHS) else API_POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Content-Security-Policy"] = policy
            await send(message)

        await self.app(scope, receive, with_headers)


class UnexpectedErrors(HTTPMiddleware):
    """Turns an unhandled exception into the one error shape *inside* the CORS middleware, so
    a browser can read a 500 too (Starlette answers it outside every middleware otherwise)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            if started:  # too late for a clean answer; let the server close the connection
                raise
            response = await errors.unexpected_error(Request(scope), exc)
            await response(scope, receive, send)


class RequestLimits(HTTPMiddleware):
    """414 for a URL over `max_url` bytes, 413 for a body over its limit: by its declared
    Content-Length at once, or as soon as the bytes received pass it. Starlette has neither."""

    def __init__(self, app: ASGIApp, max_url: int, max_body: int, bodies: dict[str, int]) -> None:
        super().__init__(app)
        self.max_url, self.max_body, self.bodies = max_url, max_body, bodies

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        url_bytes = len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"])
        if url_bytes > self.max_url:
            detail = f"The URL is {url_bytes} bytes; at most {self.max_url} are accepted."
            await errors.problem(Request(scope), 414, detail)(scope, receive, send)
            return
        limit = self.bodies.get(scope["path"], self.max_body)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            detail = f"The body is {declared} bytes; at most {limit} are accepted here."
            await errors.problem(Request(scope), 413, detail)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"The body is over {limit} bytes, the most accepted here.")
            return message

        await self.app(scope, counted, send)


class RateLimits(HTTPMiddleware):
    """Per-client limits, counted by client address over a moving window: on writes, and on
    reads under /api/ if configured. Above a limit: 429 with Retry-After, before any work.

    Counts live in this process's memory, so with N workers a client may make up to N times
    the limit; behind a proxy, run uvicorn with --proxy-headers so the address is the
    client's, not the proxy's."""

    DESCRIPTION = "Too many requests from this client; retry after Retry-After seconds."
    WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, app: ASGIApp, writes: str, reads: str) -> None:
        super().__init__(app)
        self.writes = parse_many(writes) if writes else []
        self.reads = parse_many(reads) if reads else []
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def _limits(self, scope: Scope) -> tuple[str, list[RateLimitItem]]:
        """What kind of request this is, and the limits it counts against."""
        if scope["method"] in self.WRITES:
            return "writes", self.writes
        if scope["method"] in ("GET", "HEAD") and scope["path"].startswith("/api/"):
            return "reads", self.reads
        return "", []

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        what, items = self._limits(scope)
        if items:
            client = (scope.get("client") or ("unknown",))[0]
            over = [item for item in items if not self.limiter.test(item, client)]
            if over:
                reset = max(self.limiter.get_window_stats(i, client).reset_time for i in over)
                retry = max(1, math.ceil(reset - time.time()))
                limits = "; ".join(str(i) for i in over)
                detail = f"Too many {what} from {client} (limit {limits}); retry in {retry} s."
                response = errors.problem(Request(scope), 429, detail)
                response.headers["Retry-After"] = str(retry)
                await response(scope, receive, send)
                return
            for item in items:
                self.limiter.hit(item, client)
        await self.app(scope, receive, send)


class HeadAsGet(HTTPMiddleware):
    """Answers HEAD like GET without the body (FastAPI routes take GET only), so load
    balancers and link checkers can probe any read endpoint."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
