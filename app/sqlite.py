"""SQLite's specifics: the pragmas, transactions we begin ourselves, a statement timeout, and
the writer's turn (one writer at a time)."""

import math
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, event
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


class WriterTurn:
    """SQLite's one writer at a time, taken by a write transaction as it begins and given back
    as it ends, in the worker thread that runs it: so the turn is held for the transaction
    alone, never across the event loop's rounds (under load, each round is many requests
    long). Waiting writers block on a lock, woken one by one as it is released, where SQLite's
    busy handler would poll and let newcomers overtake. A write that cannot have its turn
    within `timeout` seconds is a clean 503."""

    def __init__(self, timeout: float) -> None:
        self.lock = threading.Lock()
        self.timeout = timeout

    def take(self, info: dict[Any, Any]) -> None:
        if not self.lock.acquire(timeout=self.timeout):
            raise HTTPException(503, WRITERS_QUEUED, headers={"Retry-After": str(RETRY_AFTER_S)})
        info["writer_turn"] = self

    @staticmethod
    def give_back(info: dict[Any, Any]) -> None:
        turn = info.pop("writer_turn", None)
        if turn is not None:
            turn.lock.release()


def begin_transactions(engine: Engine, begin: str, turn: WriterTurn | None = None) -> None:
    """Take transactions out of pysqlite's hands (it begins lazily, and only before writes) and
    begin them ourselves: `BEGIN` gives a read a consistent snapshot; `BEGIN IMMEDIATE` takes
    the write lock up front, so a read-then-write never fails upgrading its lock. With a
    `turn`, each transaction takes it first and gives it back as it ends, however it ends:
    its connection goes back to the pool, or is invalidated."""

    @event.listens_for(engine, "connect")
    def autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def begin_transaction(connection: Connection) -> None:
        if turn is not None:
            turn.take(connection.info)
        try:
            connection.exec_driver_sql(begin)
        except BaseException:
            WriterTurn.give_back(connection.info)
            raise

    if turn is not None:
        # Given back once the connection is in the pool again: after its COMMIT or ROLLBACK has
        # run (the engine's commit and rollback events come before them).
        @event.listens_for(engine.pool, "checkin")
        def checkin(dbapi_connection: Any, connection_record: Any) -> None:
            WriterTurn.give_back(connection_record.info)

        @event.listens_for(engine.pool, "invalidate")
        def invalidate(dbapi_connection: Any, connection_record: Any, exception: Any) -> None:
            WriterTurn.give_back(connection_record.info)


def configure(engine: Engine, write: bool, turn: WriterTurn | None = None) -> None:
    """Pragmas on every connection, and transactions that begin as `write` needs."""
    event.listen(engine, "connect", set_pragmas)
    begin_transactions(engine, "BEGIN IMMEDIATE" if write else "BEGIN", turn)
