"""create_app(): routers, middleware, error handlers, lifespan and the OpenAPI document."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__, errors
from app.caching import ConditionalGet
from app.config import Settings, get_settings
from app.db import make_engine
from app.routes import (
    API_PREFIX,
    audit,
    cities,
    dimensions,
    health,
    indicators,
    observations,
    sources,
)

DESCRIPTION = """
Xinzhi Metrics (新质指标) publishes city-level metrics of China's **new quality productive
forces** (新质生产力), grouped under the four "new" dimensions: 新动力 new drivers, 新产业 new
industries, 新模式 new models and 新生产关系 new production relations.

Every value carries:
- **provenance**: its source and the verbatim quote it was read from;
- **qualifier**: how it was stated: `exact`, `more_than` (超), `at_least` (以上),
  `at_most` (十强, 以内), `nearly` (近) or `approximately` (约, or rounded by a derivation);
- **unit and basis**: the indicator's unit, numerator, denominator and scope. Indicators that
  look alike but stand on different bases share a *comparability family* that says why they
  must not be ranked as one (e.g. the three strategic-emerging-industry shares).

Lists come in one envelope (`items`, `total`, `limit`, `next`, `next_url`) with RFC 8288 `Link`
headers; pass `next` back as `cursor`. Every error is RFC 9457 `application/problem+json`.
CSV exports (`/observations.csv`, `/cities.csv`, `/indicators.csv`) stream every matching row.
"""

TAGS = [
    {"name": "cities", "description": "Cities (城市) and their latest values by dimension."},
    {
        "name": "dimensions",
        "description": "The four 'new' dimensions (四个“新”) the source defines.",
    },
    {"name": "indicators", "description": "What each value measures: basis, unit, family."},
    {"name": "observations", "description": "The values, with qualifier, source and quote."},
    {"name": "sources", "description": "Where the values were published."},
    {"name": "audit", "description": "Every write: who, when, what and why (admin keys)."},
    {"name": "health", "description": "Liveness for load balancers."},
]


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


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, with every 4xx/5xx declared as application/problem+json."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path in schema["paths"].values():
        for method, operation in path.items():
            # Every operation can meet the request limits (RequestLimits).
            responses = operation.setdefault("responses", {})
            responses.setdefault("414", {"description": "The URL is too long (problem+json)."})
            if method in ("post", "put", "patch"):
                responses.setdefault(
                    "413", {"description": "The body is too large (problem+json)."}
                )
                responses.setdefault(
                    "400", {"description": "The body could not be parsed (problem+json)."}
                )
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    response["content"] = {errors.PROBLEM_JSON: {"schema": problem_ref}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault(
        "Problem", errors.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync handlers run in this many threads; the pool is at least as large (see config).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        yield
        app.state.engine.dispose()
        app.state.write_engine.dispose()

    app = FastAPIOffline(
        title="Xinzhi Metrics 新质指标",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings)
    app.state.write_engine = make_engine(settings, write=True)
    app.state.db_slots = anyio.CapacityLimiter(settings.pool_size)  # see db.get_session
    errors.install(app)
    # Innermost first: the cache sits inside CORS, so cached answers get the caller's CORS
    # headers, and so do errors, unexpected ones included.
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(
        RequestLimits,
        max_url=settings.max_url_bytes,
        max_body=settings.max_body_bytes,
        bodies={f"{API_PREFIX}/observations/import": settings.import_max_bytes},
    )
    app.add_middleware(
        ConditionalGet,
        max_entries=settings.response_cache_entries,
        max_bytes=settings.response_cache_mb * 1024 * 1024,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["Link", "ETag", "Content-Disposition"],
    )
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders)
    # The routers' routes themselves, their paths already prefixed: include_router() would
    # build every route a second time, on the first request (0.1 s of start-up, see
    # docs/performance.md). So app.dependency_overrides does not reach them.
    for module in (cities, dimensions, indicators, observations, sources, audit, health):
        app.router.routes.extend(module.router.routes)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs" if settings.docs_enabled else "/openapi.json")

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
