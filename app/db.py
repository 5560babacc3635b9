"""Engines and the per-request session dependency."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session, create_engine

from app import sqlite
from app.config import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder (data/ is not in git)."""
    path = make_url(url).database
    if is_sqlite(url) and path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def postgres_connect_args(settings: Settings, timeout_ms: int = 0) -> dict[str, Any]:
    """How every PostgreSQL connection of the app is made: given up after DB_CONNECT_TIMEOUT,
    and started with these settings. Timestamps are stored as UTC without a zone; a server set
    to local time must not shift them on the way in or out. Floats come as text with the
    shortest digits that read back (extra_float_digits=1, PostgreSQL's default): a database
    set to 0 or below would print at most 15, and 0.30000000000000004 would come back as 0.3."""
    options = "-c timezone=UTC -c extra_float_digits=1"
    if timeout_ms:
        options += f" -c statement_timeout={timeout_ms}"
    return {"options": options, "connect_timeout": settings.db_connect_timeout}


def make_engine(
    settings: Settings,
    write: bool = False,
    timeout_ms: int = 0,
    snapshot: bool = False,
    turn: sqlite.WriterTurn | None = None,
) -> Engine:
    """An engine whose pool request threads can never exhaust. On SQLite, a `write` engine
    begins every transaction with BEGIN IMMEDIATE; use it for every write. A `timeout_ms`
    cancels any one statement that runs longer (the app's engines; the command line has none).
    A `snapshot` engine, for reads only, shows each transaction one snapshot of the data, as a
    SQLite transaction always does: on PostgreSQL its transactions are REPEATABLE READ, where
    READ COMMITTED would let each statement of a read (a page and its count, an export's
    batches) see writes committed since the first. A `turn` (SQLite) is taken by each write
    transaction: the app's writers wait for it in turn rather than in SQLite's busy handler."""
    url = settings.database_url
    kwargs: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        # a SQLite file does not hang up on us; a server may have restarted
        "pool_pre_ping": settings.db_pool_pre_ping and not is_sqlite(url),
    }
    if is_sqlite(url):
        kwargs["connect_args"] = {"check_same_thread": False}
        if timeout_ms:
            kwargs["connect_args"]["factory"] = sqlite.timed_connection(timeout_ms)
        ensure_sqlite_dir(url)
    elif make_url(url).get_backend_name() == "postgresql":
        kwargs["connect_args"] = postgres_connect_args(settings, timeout_ms)
        if snapshot:
            kwargs["isolation_level"] = "REPEATABLE READ"
    engine = create_engine(url, **kwargs)
    if is_sqlite(url):
        sqlite.configure(engine, write, turn)
    return engine


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request; a write request's session is on the write engine, so on
    SQLite its transaction holds the write lock (and the app's writer turn) from its first
    statement to its commit.

    A request takes one of `db_slots` (as many as the pool has connections, and no more than
    there are threads) before its session can take a connection, and waits for it here, on
    the loop. Without that, requests holding connections waited for worker threads while the
    threads waited for connections, and the server stalled until the pool timed out."""
    state = request.app.state
    engine = state.engine if request.method in READ_METHODS else state.write_engine
    async with state.db_slots:
        with Session(engine, expire_on_commit=False) as session:
            yield session


SessionDep = Annotated[Session, Depends(get_session)]
