"""Concurrent curators: two server processes write to one database at once (one SQLite file, or
one PostgreSQL database). No update is lost, and no "database is locked" reaches a client."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from sqlalchemy import event

from app.auth import create_key
from app.config import Settings
from app.main import create_app
from app.sqlite import WRITERS_QUEUED
from tests.conftest import LiveServer, run_cli, sqlite_only, start_server, stop_server
from tests.factories import NEW_OBSERVATION

pytestmark = pytest.mark.e2e

PATCHES = 40
CREATES = 20


def worker_pids(server: LiveServer) -> list[int]:
    """uvicorn's worker processes (multiprocessing spawns them; its resource tracker aside)."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    pids = [int(pid) for pid in children.read_text().split()]
    return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


@pytest.fixture(params=["two servers", "one server, two workers"])
def servers(
    request: pytest.FixtureRequest, tmp_path: Path, empty_db_url: str
) -> Iterator[list[LiveServer]]:
    """Two serve processes on one database, or one `serve --workers 2` (asked twice)."""
    url = empty_db_url
    if request.param == "two servers":
        first = start_server(
            url, tmp_path / "a.log"
        )  # migrates and seeds; the second finds it done
        second = start_server(url, tmp_path / "b.log")
        yield [first, second]
        stop_server(first)
        stop_server(second)
    else:
        server = start_server(url, tmp_path / "w.log", "--workers", "2")
        try:
            assert len(worker_pids(server)) == 2
            yield [server, server]
        finally:
            stop_server(server)


@pytest.mark.anyio
async def test_concurrent_curators_lose_nothing(servers: list[LiveServer]) -> None:
    created = run_cli(
        "keys",
        "create",
        "--name",
        "curator",
        "--scope",
        "write",
        database_url=servers[0].database_url,
    )
    key = created.stdout.strip()
    headers = {"X-API-Key": key}
    clients = [httpx.AsyncClient(base_url=s.url, headers=headers, timeout=60) for s in servers]

    async def patch(i: int) -> httpx.Response:
        return await clients[i % 2].patch(
            "/api/v1/observations/12", json={"value": 100 + i}, params={"reason": f"write {i}"}
        )

    async def create(i: int) -> httpx.Response:
        body = {
            "city_code": "hangzhou",
            "indicator_code": "ic_output",
            "period": 1990 + i,
            "value": i,
            "value_text": str(i),
            "qualifier": "exact",
            "source_id": 1,
            "quote": "q",
        }
        return await clients[i % 2].post(
            "/api/v1/observations", json=body, params={"reason": f"create {i}"}
        )

    try:
        responses = await asyncio.gather(
            *(patch(i) for i in range(PATCHES)), *(create(i) for i in range(CREATES))
        )
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * PATCHES + [201] * CREATES, [
            r.text for r in responses if r.status_code >= 300
        ]
        history = (
            await clients[0].get("/api/v1/observations/12/history", params={"limit": 500})
        ).json()["items"]
        assert [h["version"] for h in history] == list(range(1, PATCHES + 2))
        assert {h["reason"] for h in history[1:]} == {f"write {i}" for i in range(PATCHES)}
        current = (await clients[1].get("/api/v1/observations/12")).json()
        assert (current["version"], current["value"]) == (PATCHES + 1, history[-1]["value"])
        total = (await clients[0].get("/api/v1/observations")).json()["total"]
        assert total == 30 + CREATES
    finally:
        for c in clients:
            await c.aclose()


@pytest.fixture
async def few_threads() -> AsyncIterator[int]:
    limiter = anyio.to_thread.current_default_thread_limiter()
    before = limiter.total_tokens
    limiter.total_tokens = 2
    yield 2
    limiter.total_tokens = before


@pytest.mark.anyio
async def test_more_requests_than_connections_and_threads_do_not_stall(
    db_url: str, few_threads: int
) -> None:
    """60 requests at once to endpoints whose dependency and handler each take a worker thread,
    with 2 threads and 2 pooled connections (no overflow): every one is answered, in time.
    Before requests queued for a connection slot on the loop, threads blocked on an empty pool
    while the requests holding connections waited for threads, until the pool timed out."""
    settings = Settings(
        database_url=db_url, threadpool_size=few_threads, db_pool_size=2, db_max_overflow=0
    )
    app = create_app(settings)
    paths = ["/api/v1/cities/ningbo", "/api/v1/indicators/nev_output", "/api/v1/observations/1"]
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with anyio.fail_after(20):
                responses = await asyncio.gather(
                    *(
                        client.get(paths[i % 3], headers={"If-None-Match": "none"})
                        for i in range(60)
                    )
                )
    finally:
        app.state.engine.dispose()
        app.state.write_engine.dispose()
    assert [r.status_code for r in responses] == [200] * 60


@sqlite_only
@pytest.mark.anyio
@pytest.mark.parametrize("threads", [2, 8, 40])
async def test_sqlite_writers_take_turns_in_the_app(db_url: str, threads: int) -> None:
    """40 curator writes at once on SQLite, with busy_timeout 0: each waits for its turn in
    the app, so none meets a locked database. Left to SQLite's busy handler, which polls and
    lets newcomers overtake, under `make load` (64 clients, 10% writes) some waited past
    busy_timeout and got a 503. A PATCH takes the turn in one thread (its observation, read
    for update) and writes in another: with as few threads as writers, none may wait for a
    thread while another holds the turn (a deadlock, then 503s after DB_POOL_TIMEOUT)."""
    app = create_app(
        Settings(database_url=db_url, threadpool_size=threads, db_pool_size=40, db_pool_timeout=10)
    )
    event.listen(  # after the app's pragmas: a writer that finds the lock taken fails at once
        app.state.write_engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=0")
    )
    key = create_key(app.state.write_engine, "curator", "write")
    transport = httpx.ASGITransport(app=app)

    async def write(client: httpx.AsyncClient, i: int) -> httpx.Response:
        if i % 2:
            return await client.patch(
                "/api/v1/observations/12", json={"note": f"write {i}"}, params={"reason": "load"}
            )
        body = {**NEW_OBSERVATION, "period": 1900 + i}
        return await client.post("/api/v1/observations", json=body, params={"reason": "load"})

    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    try:
        async with (  # the lifespan sizes the thread pool, and disposes of the engines after
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=transport, base_url="http://test", headers={"X-API-Key": key}
            ) as client,
        ):
            with anyio.fail_after(30):
                responses = await asyncio.gather(*(write(client, i) for i in range(40)))
            history = await client.get("/api/v1/observations/12/history")
    finally:
        limiter.total_tokens = tokens
    assert [r.status_code for r in responses] == [201, 200] * 20, [
        r.text for r in responses if r.status_code >= 300
    ]
    assert history.json()["total"] == 1 + 20


@sqlite_only
@pytest.mark.anyio
async def test_a_sqlite_writer_that_cannot_have_its_turn_gets_a_clean_503(db_url: str) -> None:
    app = create_app(Settings(database_url=db_url, db_pool_timeout=0.3))
    key = create_key(app.state.write_engine, "curator", "write")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-API-Key": key}
    ) as client:
        turn = app.state.writer_turn.lock
        turn.acquire()  # an endless write holds the turn
        try:
            response = await client.patch(
                "/api/v1/observations/12", json={"note": "waits"}, params={"reason": "queue"}
            )
            assert (await client.get("/api/v1/observations/12")).status_code == 200  # reads on
        finally:
            turn.release()
        assert (response.status_code, response.headers["content-type"]) == (
            503,
            "application/problem+json",
        )
        assert response.json()["detail"] == WRITERS_QUEUED
        assert response.headers["retry-after"] == "5"
        after = await client.patch(
            "/api/v1/observations/12", json={"note": "its turn"}, params={"reason": "queue"}
        )
        assert after.status_code == 200, after.text
    app.state.engine.dispose()
    app.state.write_engine.dispose()
