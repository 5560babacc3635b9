"""Faults: a server killed mid-import, a read-only or full database, a database server restart.
Each ends with the data whole: all of a write or none of it, and a server that answers."""

import asyncio
import io
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.main import create_app
from tests.conftest import (
    BACKEND,
    TEST_POSTGRES_URL,
    LiveServer,
    conditional_get,
    kill_group,
    postgresql_only,
    run_cli,
    start_server,
    stop_server,
)
from tests.factories import IMPORT_HEADER as HEADER

pytestmark = pytest.mark.anyio

UNAVAILABLE = "The database is unavailable; try again shortly."


def bulk_csv(indicators: list[dict[str, Any]], cities: list[str], years: range) -> bytes:
    """One new observation per city, indicator and year: rows the seed does not have."""
    out = io.StringIO()
    out.write(HEADER + "\r\n")
    for year in years:
        for city in cities:
            for ind in indicators:
                out.write(f"{city},{ind['code']},{ind['unit_code']},{year},1.5,1.5,exact,")
                out.write("false,,,1,a bulk import for the fault tests,\r\n")
    return out.getvalue().encode()


def observation_count(url: str) -> int:
    return int(httpx.get(f"{url}/api/v1/observations", params={"limit": 1}).json()["total"])


def write_key(database_url: str) -> dict[str, str]:
    created = run_cli(
        "keys", "create", "--name", "bulk", "--scope", "write", database_url=database_url
    )
    assert created.returncode == 0, created.stderr
    return {"X-API-Key": created.stdout.strip()}


def writing_started(database_url: str) -> Callable[[], bool]:
    """Whether the import's rows are going in: on SQLite its transaction has spilled pages
    into the WAL; on PostgreSQL a transaction of the app's has written (it has an xid; its
    statements themselves are too quick to catch running)."""
    if BACKEND == "sqlite":
        wal = Path(f"{make_url(database_url).database}-wal")
        before = wal.stat().st_size if wal.exists() else 0
        return lambda: wal.exists() and wal.stat().st_size > before + 256 * 1024
    engine = create_engine(database_url, poolclass=NullPool)
    active = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
    )

    def inserting() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(active).scalar())

    return inserting


@pytest.mark.e2e
def test_sigkill_mid_import_keeps_all_or_nothing(tmp_path: Path, empty_db_url: str) -> None:
    server = start_server(empty_db_url, tmp_path / "server.log")
    indicators = httpx.get(f"{server.url}/api/v1/indicators", params={"limit": 500}).json()
    cities = [c["code"] for c in httpx.get(f"{server.url}/api/v1/cities").json()["items"]]
    data = bulk_csv(indicators["items"], cities, range(1900, 2020))
    rows = data.count(b"\r\n") - 1
    assert rows == len(cities) * indicators["total"] * 120 > 15_000
    before = observation_count(server.url)
    key = write_key(empty_db_url)
    started = writing_started(empty_db_url)
    outcome: dict[str, Any] = {}

    def upload() -> None:
        try:
            outcome["response"] = httpx.post(
                f"{server.url}/api/v1/observations/import",
                params={"reason": "bulk"},
                content=data,
                headers={**key, "Content-Type": "text/csv"},
                timeout=120,
            )
        except httpx.TransportError as exc:
            outcome["error"] = exc

    uploading = threading.Thread(target=upload)
    try:
        uploading.start()
        deadline = time.monotonic() + 60
        while not started() and time.monotonic() < deadline and uploading.is_alive():
            time.sleep(0.01)
        assert started(), "the import never started writing"
    finally:
        server.process.send_signal(signal.SIGKILL)
        kill_group(server.process)
        uploading.join(timeout=30)
    assert "response" not in outcome, "the import finished before the kill"
    assert isinstance(outcome["error"], httpx.TransportError)

    restarted = start_server(empty_db_url, tmp_path / "server.log")
    try:
        assert observation_count(restarted.url) == before  # none of it
        if BACKEND == "sqlite":
            with create_engine(empty_db_url, poolclass=NullPool).connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        again = httpx.post(
            f"{restarted.url}/api/v1/observations/import",
            params={"reason": "bulk, again"},
            content=data,
            headers={**key, "Content-Type": "text/csv"},
            timeout=120,
        )
        assert again.status_code == 200, again.text
        assert again.json()["added"] == rows
        assert observation_count(restarted.url) == before + rows  # then all of it
    finally:
        stop_server(restarted)


def faulty_writes(engine: Engine, pragma: str) -> None:
    """Every new write connection of `engine` starts with `pragma` (SQLite)."""

    @event.listens_for(engine, "connect")
    def _fault(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(pragma)


def make_read_only(db_url: str) -> None:
    """On PostgreSQL as a replica or a read-only database would be: every transaction is."""
    name = make_url(db_url).database
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    engine.dispose()


def data_dump(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for t in ("city", "observation", "observation_revision", "audit_event")
            for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))
        ]


WUXI = {
    "code": "wuxi",
    "name_zh": "无锡",
    "name_en": "Wuxi",
    "province_zh": "江苏",
    "province_en": "Jiangsu",
    "admin_level": "prefecture",
}
SQLITE_FULL = pytest.mark.skipif(
    BACKEND != "sqlite", reason="a full disk is simulated with SQLite's max_page_count only"
)
IMPORT = ("POST", "/api/v1/observations/import")
WRITES = [
    ("POST", "/api/v1/cities"),
    ("PATCH", "/api/v1/cities/ningbo"),
    ("DELETE", "/api/v1/observations/1"),
    IMPORT,
]


@pytest.mark.parametrize(
    ("fault", "writes"),
    [
        # SQLITE_READONLY, as on a read-only file; PostgreSQL: a read-only database.
        pytest.param("PRAGMA query_only = ON", WRITES, id="read-only"),
        # SQLITE_FULL, as on a full disk: the file may not grow by one page. (A small write
        # may still fit in the pages it has, so the write here is an import.)
        pytest.param("PRAGMA max_page_count = 1", [IMPORT], id="full", marks=SQLITE_FULL),
    ],
)
async def test_a_read_only_or_full_database_is_a_503(
    fault: str, writes: list[tuple[str, str]], db_url: str
) -> None:
    from app.auth import create_key

    bodies: dict[str, dict[str, Any]] = {
        "POST": {"json": WUXI},
        "PATCH": {"json": {"name_en": "Ningpo"}},
    }
    indicators = [{"code": "sei_va_share_gdp", "unit_code": "percent"}]
    bodies["IMPORT"] = {
        "content": bulk_csv(indicators, ["ningbo", "hefei"], range(1900, 2200)),
        "headers": {"Content-Type": "text/csv"},
    }
    key = {"X-API-Key": create_key(create_engine(db_url, poolclass=NullPool), "k", "write")}
    if BACKEND == "postgresql":
        make_read_only(db_url)
    app = create_app(Settings(database_url=db_url))
    if BACKEND == "sqlite":
        faulty_writes(app.state.write_engine, fault)
    before = data_dump(app.state.engine)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        for method, url in writes:
            body = dict(bodies.get("IMPORT" if (method, url) == IMPORT else method, {}))
            headers = {**key, **body.pop("headers", {})}
            response = await c.request(
                method, url, **body, params={"reason": "fault test"}, headers=headers
            )
            assert (response.status_code, response.headers["content-type"]) == (
                503,
                "application/problem+json",
            ), response.text
            assert response.json()["detail"] == UNAVAILABLE
            assert response.headers["retry-after"] == "5"
        # Reads go on, and nothing was half-written.
        assert (await c.get("/api/v1/cities/ningbo")).json()["name_en"] == "Ningbo"
    assert data_dump(app.state.engine) == before
    app.state.engine.dispose()
    app.state.write_engine.dispose()


@postgresql_only
async def test_a_lost_version_connection_is_made_again(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The connection the data version is read on (app/caching.py) ends under it: that request
    is answered without validators, and the next one connects again."""
    first = await client.get("/api/v1/cities/ningbo")
    reader = conditional_get(app).reader
    assert reader is not None
    pid = reader.connection.info.backend_pid
    with app.state.write_engine.connect() as connection:
        ended = connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert ended.scalar() is True
    lost = await client.get("/api/v1/cities/ningbo")
    again = await client.get("/api/v1/cities/ningbo")
    assert (lost.status_code, lost.json(), "etag" in lost.headers) == (200, first.json(), False)
    assert (again.status_code, again.headers["etag"]) == (200, first.headers["etag"])
    assert reader.connection.info.backend_pid != pid


@postgresql_only
async def test_a_hung_version_connection_is_given_up_after_the_statement_timeout(
    db_url: str,
) -> None:
    """The server process behind the data version's connection stops (SIGSTOP: the connection
    stays open and nothing answers on it). That request is answered after the statement
    timeout, without validators, and the next one connects again; before, every request
    under /api/v1 waited on that connection for as long as the process stayed stopped."""
    app = create_app(Settings(database_url=db_url, statement_timeout_ms=1000))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        first = await c.get("/api/v1/cities/ningbo")
        reader = conditional_get(app).reader
        assert reader is not None
        pid = reader.connection.info.backend_pid
        os.kill(pid, signal.SIGSTOP)
        try:
            with anyio.fail_after(30):
                hung = await c.get("/api/v1/cities/ningbo")
        finally:
            os.kill(pid, signal.SIGCONT)
        again = await c.get("/api/v1/cities/ningbo")
    assert (hung.status_code, hung.json(), "etag" in hung.headers) == (200, first.json(), False)
    assert (again.status_code, again.headers["etag"]) == (200, first.headers["etag"])
    assert reader.connection.info.backend_pid != pid
    conditional_get(app).close()
    app.state.engine.dispose()
    app.state.write_engine.dispose()


@contextmanager
def black_hole() -> Iterator[str]:
    """A PostgreSQL URL where connections are accepted (into a listening socket's backlog) and
    never answered."""
    with socket.create_server(("127.0.0.1", 0)) as hole:
        yield f"postgresql+psycopg://xinzhi@127.0.0.1:{hole.getsockname()[1]}/xinzhi"


async def test_a_server_that_never_answers_is_a_503_after_the_connect_timeout() -> None:
    """A PostgreSQL address where something accepts connections and never answers (a hung
    server, or a route that drops the packets after the handshake): every request is a 503
    after DB_CONNECT_TIMEOUT, not after psycopg's default of 130 s. Concurrent requests wait
    for one connect of the data version's reader, not one each in turn. Needs no server."""
    with black_hole() as url:
        app = create_app(Settings(database_url=url, db_connect_timeout=2))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            with anyio.fail_after(30):
                answers = await asyncio.gather(
                    c.get("/healthz"), *(c.get("/api/v1/cities") for _ in range(4))
                )
        assert [(a.status_code, a.headers["content-type"]) for a in answers] == 5 * [
            (503, "application/problem+json")
        ]
        assert {a.json()["detail"] for a in answers} == {UNAVAILABLE}
        reader = conditional_get(app).reader
        assert reader is not None and reader.failed_connects == 1
        conditional_get(app).close()
        app.state.engine.dispose()
        app.state.write_engine.dispose()


@pytest.mark.parametrize("command", [["migrate"], ["seed"], ["export", "observations"]])
def test_the_command_line_says_the_database_is_unavailable_without_a_traceback(
    command: list[str],
) -> None:
    with black_hole() as url:
        done = run_cli(*command, database_url=url, env={"DB_CONNECT_TIMEOUT": "2"})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "error: the database is unavailable: connection timeout expired\n"


def pg_ctl(*args: str) -> None:
    """pg_ctl on the throwaway server .ci/postgres started (its data is in the socket dir)."""
    assert TEST_POSTGRES_URL is not None
    data = Path(make_url(TEST_POSTGRES_URL).query["host"]) / "data"  # type: ignore[arg-type]
    if not data.is_dir():
        pytest.fail(f"TEST_POSTGRES_URL is not a server .ci/postgres started ({data} missing)")
    bindir = subprocess.run(
        ["bash", "-c", "source .ci/postgres && pg_bindir"], capture_output=True, text=True
    ).stdout.strip()
    as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    subprocess.run([*as_owner, f"{bindir}/pg_ctl", "-D", str(data), "-w", *args], check=True)


@pytest.mark.e2e
@pytest.mark.skipif(BACKEND != "postgresql", reason="restarts the PostgreSQL server")
def test_a_postgresql_restart_is_survived(tmp_path: Path, db_url: str) -> None:
    server: LiveServer = start_server(db_url, tmp_path / "server.log")
    key = write_key(db_url)
    try:
        urls = [f"{server.url}/api/v1/cities/{c}" for c in ("ningbo", "shenzhen", "hefei")]
        with httpx.Client(timeout=30) as client:
            assert [client.get(u).status_code for u in urls * 5] == [200] * 15  # pool warm
            pg_ctl("restart", "-m", "fast")  # every pooled connection is now dead
            statuses = [client.get(u).status_code for u in urls * 5]
            created = client.post(
                f"{server.url}/api/v1/cities",
                json=WUXI,
                params={"reason": "after the restart"},
                headers=key,
            )
        assert statuses == [200] * 15
        assert created.status_code == 201, created.text
    finally:
        stop_server(server)
