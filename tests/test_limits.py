"""Abuse limits: per-client rate limits (429 with Retry-After) and the statement timeout."""

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from app import errors
from app.config import Settings
from app.db import SessionDep, make_engine
from app.main import create_app

# Never ends by itself: only the statement timeout stops it.
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
COUNT_TO = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c"
)
TIMED_OUT = "The query ran longer than the statement timeout; narrow its filters."
pytestmark = pytest.mark.anyio
CITY = {"code": "wuxi", "name_zh": "无锡", "name_en": "Wuxi", "province": "Jiangsu"}


async def client_of(app: FastAPI, address: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def limited(db_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(
        Settings(database_url=db_url, rate_limit_writes="3/minute", rate_limit_reads="5/minute")
    )
    yield app
    app.state.engine.dispose()
    app.state.write_engine.dispose()


def assert_429(response: httpx.Response, what: str, limit: str, window: int) -> None:
    assert (response.status_code, response.headers["content-type"]) == (
        429,
        "application/problem+json",
    )
    retry = int(response.headers["retry-after"])
    assert 1 <= retry <= window
    assert response.json()["detail"] == (
        f"Too many {what} from 10.0.0.1 (limit {limit}); retry in {retry} s."
    )


async def test_writes_over_the_limit_get_429_with_retry_after(limited: FastAPI) -> None:
    async with await client_of(limited) as c:
        # Every write counts, even one refused later for its key: the limit comes first.
        statuses = [(await c.post("/api/v1/cities", json=CITY)).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        response = await c.post(
            "/api/v1/cities", json=CITY, headers={"Origin": "https://example.org"}
        )
        assert_429(response, "writes", "3 per 1 minute", 60)
        assert response.headers["access-control-allow-origin"] == "*"  # a browser can read it
        for method in ("PATCH", "DELETE"):
            assert (await c.request(method, "/api/v1/cities/ningbo")).status_code == 429
        # Reads have their own budget, and the health check has none.
        assert (await c.get("/api/v1/cities/ningbo")).status_code == 200
        assert [(await c.get("/healthz")).status_code for _ in range(8)] == [200] * 8
    async with await client_of(limited, "10.0.0.2") as other:  # another client: its own count
        assert (await other.post("/api/v1/cities", json=CITY)).status_code == 401


async def test_reads_over_a_configured_limit_get_429(limited: FastAPI) -> None:
    async with await client_of(limited) as c:
        urls = ["/api/v1/cities", "/api/v1/indicators", "/api/v1/dimensions"]
        statuses = [(await c.get(urls[i % 3])).status_code for i in range(5)]
        assert statuses == [200] * 5
        assert_429(await c.get("/api/v1/cities/ningbo"), "reads", "5 per 1 minute", 60)
        assert (await c.head("/api/v1/cities")).status_code == 429
        assert (await c.get("/openapi.json")).status_code == 200  # not under /api/


async def test_the_window_moves_on(db_url: str) -> None:
    app = create_app(Settings(database_url=db_url, rate_limit_writes="2 per 3 seconds"))
    async with await client_of(app) as c:
        assert (await c.get("/api/v1/cities")).status_code == 200  # warm: the next are quick
        first = [(await c.delete("/api/v1/cities/wuxi")).status_code for _ in range(3)]
        assert first == [401, 401, 429]
        retry = int((await c.delete("/api/v1/cities/wuxi")).headers["retry-after"])
        assert 1 <= retry <= 3
        time.sleep(retry + 0.05)
        assert (await c.delete("/api/v1/cities/wuxi")).status_code == 401
    app.state.engine.dispose()
    app.state.write_engine.dispose()


def test_rate_limit_defaults() -> None:
    fields = Settings.model_fields
    assert (fields["rate_limit_writes"].default, fields["rate_limit_reads"].default) == (
        "60/minute",
        "",
    )
    assert fields["statement_timeout_ms"].default == 10_000


@pytest.mark.parametrize("value", ["sixty", "60/fortnight", "60 per", "/minute"])
def test_a_bad_rate_limit_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match=f"'{value}' is not a rate limit such as 60/minute"):
        Settings(rate_limit_writes=value)


def _session_query(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_statement_timeout_cancels_a_runaway_query(db_url: str) -> None:
    engine = make_engine(Settings(database_url=db_url), timeout_ms=200)
    started = time.monotonic()
    with pytest.raises(OperationalError) as caught:
        _session_query(engine, ENDLESS)
    assert errors.timed_out(caught.value)
    assert time.monotonic() - started < 5
    # The connection goes back to the pool in working order: the next query runs.
    assert _session_query(engine, "SELECT 1") == 1
    engine.dispose()


def test_a_long_stream_is_timed_per_batch_not_as_a_whole(db_url: str) -> None:
    """As an export streams: each batch is quick, the whole takes longer than the timeout."""
    engine = make_engine(Settings(database_url=db_url), timeout_ms=1000)
    started, got = time.monotonic(), []
    with engine.connect() as conn:
        streamed = conn.execution_options(stream_results=True)
        for batch in streamed.execute(text(COUNT_TO.format(n=10_000))).partitions(2000):
            got += [r[0] for r in batch]
            time.sleep(0.3)
    assert got == list(range(1, 10_001))
    assert time.monotonic() - started > 1.5
    engine.dispose()


def test_without_a_timeout_nothing_is_cancelled(db_url: str) -> None:
    engine = make_engine(Settings(database_url=db_url))
    counted = f"SELECT max(x) FROM ({COUNT_TO.format(n=300_000)}) AS numbers"
    assert _session_query(engine, counted) == 300_000
    engine.dispose()


async def test_a_request_over_the_statement_timeout_is_a_503(db_url: str) -> None:
    app = create_app(Settings(database_url=db_url, statement_timeout_ms=200))

    @app.get("/slow")
    def slow(session: SessionDep) -> int:
        return int(session.exec(text(ENDLESS)).one()[0])  # type: ignore[call-overload]

    async with await client_of(app) as c:
        response = await c.get("/slow")
        assert (response.status_code, response.headers["content-type"]) == (
            503,
            "application/problem+json",
        )
        assert response.json()["detail"] == TIMED_OUT
        assert "retry-after" not in response.headers  # the same query would only time out again
        assert (await c.get("/api/v1/cities/ningbo")).status_code == 200
    app.state.engine.dispose()
    app.state.write_engine.dispose()
