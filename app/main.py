"""create_app(): routers, middleware, error handlers, lifespan and the OpenAPI document."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.models import Components
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

from app import __version__, errors
from app.caching import ConditionalGet
from app.config import Settings, get_settings
from app.db import make_engine
from app.middleware import RateLimits, RequestLimits, SecurityHeaders, UnexpectedErrors
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
from app.sqlite import WriterTurn

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


# The API's modules, hottest first: requests try the routes in this order (the document groups
# them by tag, in TAGS' order).
ROUTERS = (observations, cities, indicators, dimensions, sources, health, audit)


def with_head(router: APIRouter) -> None:
    """HEAD beside every GET, answered by the same endpoint (Starlette sends it without the
    body), so load balancers and link checkers can probe any read. FastAPI takes GET alone, and
    one route with both methods would be two operations with one id in the OpenAPI document.
    Idempotent: a module's router serves every app made."""
    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    heads = {r.path for r in routes if r.methods == {"HEAD"}}
    for route in routes:
        if route.methods == {"GET"} and route.path not in heads:
            router.add_api_route(
                route.path.removeprefix(router.prefix),
                route.endpoint,
                methods=["HEAD"],
                response_model=route.response_model,
                response_class=route.response_class,
                status_code=route.status_code,
                dependencies=route.dependencies,
                name=f"{route.name}_head",
                include_in_schema=False,
            )


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
            responses.setdefault("429", {"description": RateLimits.DESCRIPTION})
            responses.setdefault("503", {"description": errors.UNAVAILABLE})
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
    # The problem schemas, written as get_openapi() writes its own: through FastAPI's OpenAPI
    # models, without nulls. Routes name no model for their errors (errors.problem_responses):
    # FastAPI would build a Problem validator for each status of each route, 83 in all, that
    # only this document uses (2% of start's instructions).
    _, problem = models_json_schema(
        [(errors.Problem, "serialization")], ref_template="#/components/schemas/{model}"
    )
    written = Components(schemas=problem["$defs"])
    components.update(jsonable_encoder(written, by_alias=True, exclude_none=True)["schemas"])
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    schema["components"]["schemas"] = dict(sorted(components.items()))  # in FastAPI's order
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
    timeout = settings.statement_timeout_ms
    app.state.engine = make_engine(settings, timeout_ms=timeout, snapshot=True)
    app.state.writer_turn = WriterTurn(settings.db_pool_timeout)  # SQLite: see WriterTurn
    app.state.write_engine = make_engine(
        settings, write=True, timeout_ms=timeout, turn=app.state.writer_turn
    )
    # See db.get_session. No more slots than threads: a write blocked on the writer's turn
    # holds a thread and a slot, so the turn's holder always finds a thread for its next step.
    slots = min(settings.pool_size, settings.threadpool_size)
    app.state.db_slots = anyio.CapacityLimiter(slots)
    errors.install(app)
    # Innermost first: the cache sits inside CORS, so cached answers get the caller's CORS
    # headers, and so do errors, unexpected ones included. Rate limits sit outside the cache,
    # so cached answers count too.
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
        RateLimits, writes=settings.rate_limit_writes, reads=settings.rate_limit_reads
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["Link", "ETag", "Content-Disposition"],
    )
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    app.add_middleware(SecurityHeaders)
    for module in ROUTERS:
        with_head(module.router)
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs" if settings.docs_enabled else "/openapi.json")

    with_head(app.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
