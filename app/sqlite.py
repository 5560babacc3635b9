"""SQLite's specifics: the pragmas, transactions we begin ourselves, a statement timeout, and
the writer's turn (one writer at a time, first come, first served)."""

import math
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Request
from sqlalchemy import Engine, event
from starlette.exceptions import HTTPException

from app.errors import RETRY_AFTER_S

WRITERS_QUEUED = "Too many writes are waiting their turn; try again shortly."


def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside one writer; foreign keys are off by default in SQLite."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class TimedCursor(sqlite3.Cursor):
    """Starts the statement clock of its TimedConnection on each call that steps a statement.
    A batch fetch restarts it, as each FETCH does on PostgreSQL, so a long export streams on."""

    connection: "TimedConnection"

    def execute(self, sql: str, parameters: Any = (), /) -> "TimedCursor":
        self.connection.arm()
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> "TimedCursor":
        self.connection.disarm()  # many short statements, each within the limit
        return super().executemany(sql, parameters)

    def fetchone(self) -> Any:
        self.connection.arm()
        return super().fetchone()

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        self.connection.arm()
        return super().fetchmany(size if size is not None else self.arraysize)

    def fetchall(self) -> list[Any]:
        self.connection.arm()
        return super().fetchall()


class TimedConnection(sqlite3.Connection):
    """A SQLite connection with a statement timeout, which SQLite lacks: a progress handler,
    called every PROGRESS_STEPS virtual-machine steps, interrupts the statement once it has
    run `timeout` seconds (sqlite3.OperationalError "interrupted", a 503 for the client)."""

    PROGRESS_STEPS = 10_000
    timeout = math.inf
    deadline = math.inf

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_progress_handler(self.over_time, self.PROGRESS_STEPS)

    def over_time(self) -> bool:
        return time.monotonic() > self.deadline

    def arm(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def disarm(self) -> None:
        self.deadline = math.inf

    def cursor(self, factory: Any = TimedCursor) -> Any:
        return super().cursor(factory)

    def commit(self) -> None:
        self.disarm()
        super().commit()

    def rollback(self) -> None:
        self.disarm()
        super().rollback()


def timed_connection(timeout_ms: int) -> type[TimedConnection]:
    """The connection class for an engine whose statements give up after `timeout_ms`."""
    return type("TimedConnection", (TimedConnection,), {"timeout": timeout_ms / 1000})


def begin_transactions(engine: Engine, begin: str) -> None:
    """Take transactions out of pysqlite's hands (it begins lazily, and only before writes) and
    begin them ourselves: `BEGIN` gives a read a consistent snapshot; `BEGIN IMMEDIATE` takes
    the write lock up front, so a read-then-write never fails upgrading its lock."""

    @event.listens_for(engine, "connect")
    def autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def begin_transaction(connection: Any) -> None:
        connection.exec_driver_sql(begin)


def configure(engine: Engine, write: bool) -> None:
    """Pragmas on every connection, and transactions that begin as `write` needs."""
    event.listen(engine, "connect", set_pragmas)
    begin_transactions(engine, "BEGIN IMMEDIATE" if write else "BEGIN")


@asynccontextmanager
async def writer_turn(request: Request) -> AsyncIterator[None]:
    """SQLite's one writer at a time, taken in turn (`sqlite_writer`, an anyio.Lock: first come,
    first served), waiting on the loop. Left to SQLite's busy handler, which polls, new writers
    overtook old ones: under 64 clients some waited past busy_timeout and got a 503. A write
    that cannot have its turn within DB_POOL_TIMEOUT gets a 503 too, but a clean one."""
    state = request.app.state
    try:
        with anyio.fail_after(state.settings.db_pool_timeout):
            await state.sqlite_writer.acquire()
    except TimeoutError:
        raise HTTPException(
            503, WRITERS_QUEUED, headers={"Retry-After": str(RETRY_AFTER_S)}
        ) from None
    try:
        yield
    finally:
        state.sqlite_writer.release()
