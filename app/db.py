"""Engine, SQLite pragmas and the per-request session dependency."""

import ast
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from sqlalchemy import Engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, create_engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from app.config import ROOT, Settings
from app.errors import RETRY_AFTER_S
from app.prepared import Reader

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder (data/ is not in git)."""
    path = make_url(url).database
    if is_sqlite(url) and path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; foreign keys are off by default in SQLite.
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
        self.set_progress_handler(self._over_time, self.PROGRESS_STEPS)

    def _over_time(self) -> bool:
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


def sqlite_transactions(engine: Engine, begin: str) -> None:
    """Take transactions out of pysqlite's hands (it begins lazily, and only before writes) and
    begin them ourselves: `BEGIN` gives a read a consistent snapshot; `BEGIN IMMEDIATE` takes
    the write lock up front, so a read-then-write never fails upgrading its lock."""

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


def postgres_connect_args(settings: Settings, timeout_ms: int = 0) -> dict[str, Any]:
    """How every PostgreSQL connection of the app is made: given up after DB_CONNECT_TIMEOUT,
    and started with these settings. Timestamps are stored as UTC without a zone; a server set
    to local time must not shift them on the way in or out. Floats come as text, printed with
    the shortest digits that read back (extra_float_digits above 0, PostgreSQL's default): a
    database set to 0 or below would print at most 15, and 0.30000000000000004 would be read
    as 0.3 and the largest double not at all."""
    options = "-c timezone=UTC -c extra_float_digits=1"
    if timeout_ms:
        options += f" -c statement_timeout={timeout_ms}"
    return {"options": options, "connect_timeout": settings.db_connect_timeout}


def make_engine(
    settings: Settings, write: bool = False, timeout_ms: int = 0, snapshot: bool = False
) -> Engine:
    """An engine whose pool request threads can never exhaust. On SQLite, a `write` engine
    begins every transaction with BEGIN IMMEDIATE; use it for every write. A `timeout_ms`
    cancels any one statement that runs longer (the app's engines; the command line has none).
    A `snapshot` engine, for reads only, shows each transaction one snapshot of the data, as a
    SQLite transaction always does: on PostgreSQL its transactions are REPEATABLE READ, where
    READ COMMITTED would let each statement of a read (a page and its count, an export's
    batches and the cells fetched between them) see writes committed since the first.
    """
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
            kwargs["connect_args"]["factory"] = type(
                "TimedConnection", (TimedConnection,), {"timeout": timeout_ms / 1000}
            )
        ensure_sqlite_dir(url)
    elif make_url(url).get_backend_name() == "postgresql":
        kwargs["connect_args"] = postgres_connect_args(settings, timeout_ms)
        if snapshot:
            kwargs["isolation_level"] = "REPEATABLE READ"
    engine = create_engine(url, **kwargs)
    if is_sqlite(url):
        event.listen(engine, "connect", _sqlite_pragmas)
        sqlite_transactions(engine, "BEGIN IMMEDIATE" if write else "BEGIN")
    return engine


WRITERS_QUEUED = "Too many writes are waiting their turn; try again shortly."
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@asynccontextmanager
async def db_slot(request: Request) -> AsyncIterator[None]:
    """One of the app's `db_slots` for this request, unless it holds one already."""
    if getattr(request.state, "db_slot", False):
        yield
        return
    async with request.app.state.db_slots:
        request.state.db_slot = True
        try:
            yield
        finally:
            request.state.db_slot = False


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request; a write request's session is on the write engine, so on
    SQLite its transaction holds the write lock from its first statement to its commit.

    Async on purpose: opening a session does no I/O, and closing one only hands its connection
    back to the pool, so neither is worth two trips through the worker-thread pool.

    A request takes one of `db_slots` (as many as the pool has connections) before its session
    can take a connection, and waits for it here, on the loop. Without that, requests holding
    connections waited for worker threads while the threads waited for connections, and the
    server stalled until the pool timed out. On SQLite a write request first waits for its
    turn to write (writer_turn)."""
    state = request.app.state
    engine = state.engine if request.method in READ_METHODS else state.write_engine
    turn: AbstractAsyncContextManager[Any] = nullcontext()
    if engine is state.write_engine and engine.dialect.name == "sqlite":
        turn = writer_turn(request)
    async with turn, db_slot(request):
        with Session(engine, expire_on_commit=False) as session:
            yield session


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


SessionDep = Annotated[Session, Depends(get_session)]

T = TypeVar("T")


@contextmanager
def driver_errors(engine: Engine) -> Iterator[None]:
    """Raw driver errors raised as the session would have wrapped them (so they get the same
    answers: 409, 503, ...)."""
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error, dialect=engine.dialect) from exc


@contextmanager
def reading(engine: Engine) -> Iterator[Reader]:
    """A pooled driver connection's cursor inside one read transaction: one snapshot on a
    `snapshot` engine (make_engine)."""
    with driver_errors(engine):
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            if engine.dialect.name == "sqlite":
                cursor.execute("BEGIN")
            yield Reader(cursor, engine.dialect)
        finally:
            connection.close()  # back to the pool, which rolls the read transaction back


def _read(engine: Engine, work: Callable[[Reader], T]) -> T:
    with reading(engine) as reader:
        return work(reader)


class LoopReader:
    """The connection SQLite reads use on the event loop. They run there one at a time, never
    across an await, so one connection serves them all, kept out of the pool: a checkout and
    a checkin with its reset cost about 25 µs, a tenth of an uncached page
    (docs/performance.md). It is made by the engine (the same pragmas and statement timeout)
    on the first read, and made again after a driver error. It is read-only (`query_only`):
    a read that tried to write would fail rather than write, at no measured cost."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connection: Any = None

    def __call__(self, work: Callable[[Reader], T]) -> T:
        with driver_errors(self.engine):
            if self.connection is None:
                fairy = self.engine.raw_connection()
                fairy.detach()  # ours until close(); the pool neither counts nor resets it
                connection: Any = fairy.dbapi_connection
                connection.execute("PRAGMA query_only=ON")  # before it serves any read
                self.connection = connection
            try:
                cursor = self.connection.cursor()
                cursor.execute("BEGIN")
                try:
                    return work(Reader(cursor, self.engine.dialect))
                finally:
                    self.connection.rollback()
            except self.engine.dialect.loaded_dbapi.Error:
                self.close()
                raise

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


async def read(request: Request, work: Callable[[Reader], T]) -> T:
    """Runs `work` on a driver connection, in one read transaction.

    On SQLite it runs right here, on the event loop, on the app's LoopReader. Its reads are
    short, indexed and local, and handing each one to a worker thread costs far more than the
    read itself: with dozens of threads taking turns at the GIL, a 0.5 ms page took 10 ms
    (docs/performance.md). A server database is asked from a worker thread, on a pooled
    connection, so the loop never waits on the network."""
    engine: Engine = request.app.state.engine
    if engine.dialect.name == "sqlite":
        loop_reader: LoopReader = request.app.state.loop_reader
        return loop_reader(work)
    async with db_slot(request):
        return await run_in_threadpool(_read, engine, work)


def alembic_config(url: str) -> "AlembicConfig":
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Brings the schema to `revision`; migrations are the only thing that creates tables."""
    from alembic import command

    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


MIGRATIONS = ROOT / "migrations" / "versions"


def _revises(path: Path) -> tuple[str, tuple[str, ...]] | None:
    """A migration file's `revision` and the revisions it revises, from its module-level
    assignments (where Alembic reads them, after importing the file); None unless both are
    there as literals."""
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_bytes(), str(path)).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                    try:
                        found[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        return None
    revision, down = found.get("revision"), found.get("down_revision", ...)
    down = () if down is None else (down,) if isinstance(down, str) else down
    if not isinstance(revision, str) or not isinstance(down, tuple | list):
        return None
    return revision, tuple(down)


def migration_heads(folder: Path) -> set[str] | None:
    """The revisions no other migration revises, as Alembic finds them, read from the files
    without importing Alembic (a quarter of a second of start-up); None if a file does not
    state its revisions as literals."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in folder.glob("*.py"):
        if path.name.startswith(("__init__", ".#")):  # the files Alembic skips too
            continue
        ids = _revises(path)
        if ids is None:
            return None
        revisions.add(ids[0])
        revised.update(ids[1])
    return revisions - revised


def at_head(engine: Engine) -> bool:
    """Whether the database's schema is the newest migration's: one small read, where a
    no-op `alembic upgrade` costs a third of a second of start-up. When in doubt (a migration
    it cannot read), False: the upgrade then runs, and does nothing at head."""
    heads = migration_heads(MIGRATIONS)
    if not heads:
        return False
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
        return {version for (version,) in rows} == heads
