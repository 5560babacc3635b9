"""Conditional GET and a response cache for the API, both keyed by the data version.

The data version is the newest audit event: every write records one, so any write changes
every ETag and empties the cache, and nothing is served stale after a write, in this worker
or another (each request reads the version from the database, which costs one indexed row).
"""

import sqlite3
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from typing import Any

import anyio
from sqlalchemy import Engine, desc, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import postgres_connect_args
from app.models import AuditEvent

CACHED_PREFIX = "/api/v1/"
UNCACHED_PREFIXES = ("/api/v1/audit",)  # per-key answers: never shared, never 304'd
MAX_ENTRY_BYTES = 1024 * 1024
AUDIT = AuditEvent.__table__  # type: ignore[attr-defined]


NEWEST_EVENT = select(AUDIT.c.id, AUDIT.c.at).order_by(desc(AUDIT.c.id)).limit(1)


@lru_cache(maxsize=64)  # the same version is asked for by every request until the next write
def _validators(event_id: int, at: datetime) -> tuple[str, str]:
    return f'W/"v{event_id}"', format_datetime(at.replace(tzinfo=UTC), usegmt=True)


class VersionReader:
    """Reads the data version: `await reader()` is (ETag, Last-Modified), or None for a
    database with no writes yet; an unreadable version raises SQLAlchemyError. It makes the
    validators again only when the newest event has changed. One implementation per backend,
    chosen once (version_reader), each reading over a connection of its own."""

    SQL = "SELECT id, at FROM audit_event ORDER BY id DESC LIMIT 1"
    row: tuple[int, str | datetime] | None = None
    validators: tuple[str, str] | None = None

    async def __call__(self) -> tuple[str, str] | None:
        raise NotImplementedError

    def close(self) -> None:
        """Closes the reader's connection."""

    def remember(self, row: tuple[int, str | datetime] | None) -> tuple[str, str] | None:
        if row != self.row:  # a write since the last request: new validators
            self.row = row
            if row is None:
                self.validators = None
            else:
                at = row[1] if isinstance(row[1], datetime) else datetime.fromisoformat(row[1])
                self.validators = _validators(row[0], at)
        return self.validators


class SQLiteVersion(VersionReader):
    """Read on the event loop itself, from one read-only connection of its own: an indexed
    one-row read from a local file takes microseconds, less than handing it to a thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.connection: sqlite3.Connection | None = None

    async def __call__(self) -> tuple[str, str] | None:
        try:
            if self.connection is None:
                self.connection = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                )
                self.connection.isolation_level = None  # autocommit: sees the latest commit
            return self.remember(self.connection.execute(self.SQL).fetchone())
        except sqlite3.Error:
            self.close()  # a file that was missing or locked: connect again next time
            raise SQLAlchemyError("data version unavailable") from None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def finish(connection: Any) -> None:
    connection.pgconn.finish()  # what AsyncConnection.close() does, without a loop


class PostgresVersion(VersionReader):
    """Read on the event loop over one autocommit connection of its own, psycopg's
    asynchronous one: a single round trip, which the loop waits out serving other requests.
    Connected on the first read, again after an error; closed by close(), or when the reader
    is collected.

    One request connects at a time. If it fails, the requests that waited for it fail too,
    without trying again themselves: against a server that does not answer, each would
    otherwise wait out its own DB_CONNECT_TIMEOUT, one after another. A read that takes
    longer than `timeout` seconds (the statement timeout, which a stopped or unreachable
    server cannot enforce itself) is given up, and the connection with it."""

    def __init__(
        self, engine: Engine, connect_args: dict[str, Any], timeout: float | None = None
    ) -> None:
        self.dbapi = engine.dialect.loaded_dbapi
        _, params = engine.dialect.create_connect_args(engine.url)
        self.params = {**params, **connect_args, "autocommit": True}
        self.connection: Any = None
        self.closer: weakref.finalize[[Any], Any] | None = None
        self.connecting = anyio.Lock()
        self.failed_connects = 0
        self.timeout = timeout

    async def __call__(self) -> tuple[str, str] | None:
        try:
            return await self.read()
        except self.dbapi.Error:
            self.close()
            raise SQLAlchemyError("data version unavailable") from None

    async def read(self) -> tuple[str, str] | None:
        if self.connection is None:
            failed = self.failed_connects
            async with self.connecting:
                if self.connection is None:
                    if self.failed_connects != failed:
                        raise self.dbapi.OperationalError(
                            "the connect this request waited for failed"
                        )
                    try:
                        connection = await self.dbapi.AsyncConnection.connect(**self.params)
                    except self.dbapi.Error:
                        self.failed_connects += 1
                        raise
                    self.closer = weakref.finalize(self, finish, connection)
                    self.connection = connection
        with anyio.move_on_after(self.timeout):
            cursor = await self.connection.execute(self.SQL)
            return self.remember(await cursor.fetchone())
        raise self.dbapi.OperationalError(f"no answer within {self.timeout} s")

    def close(self) -> None:
        if self.closer is not None:
            self.closer()  # once: a finalizer runs at most once
        self.connection = self.closer = None


class EngineVersion(VersionReader):
    """Any other database (an in-memory SQLite, another driver): read through the engine's
    pool in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self) -> tuple[int, datetime] | None:
        with self.engine.connect() as conn:
            row = conn.execute(NEWEST_EVENT).first()
        return None if row is None else (row.id, row.at)

    async def __call__(self) -> tuple[str, str] | None:
        return self.remember(await run_in_threadpool(self.read))


def version_reader(app: Any) -> VersionReader:
    """The app's data version reader, for its database's backend."""
    engine: Engine = app.state.engine
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return SQLiteVersion(url.database)
    if engine.dialect.driver == "psycopg":
        settings = app.state.settings
        timeout_ms = settings.statement_timeout_ms
        connect_args = postgres_connect_args(settings, timeout_ms)
        return PostgresVersion(engine, connect_args, timeout=timeout_ms / 1000 or None)
    return EngineVersion(engine)


def _matches(if_none_match: str, etag: str) -> bool:
    tags = {t.strip() for t in if_none_match.split(",")}
    return "*" in tags or etag in tags or etag.removeprefix("W/") in tags


def _not_modified_since(if_modified_since: str, last_modified: str) -> bool:
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False


@dataclass
class ResponseCache:
    """Whole JSON responses by URL, for one data version; least recently used go first."""

    max_entries: int
    max_bytes: int
    version: str = ""
    size: int = 0
    entries: OrderedDict[bytes, tuple[int, list[tuple[bytes, bytes]], bytes]] = field(
        default_factory=OrderedDict
    )

    def get(self, version: str, key: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        if version != self.version:
            self.entries.clear()
            self.version, self.size = version, 0
            return None
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
        return hit

    def put(
        self, version: str, key: bytes, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        if version != self.version or self.max_entries == 0 or len(body) > MAX_ENTRY_BYTES:
            return
        self.entries[key] = (status, headers, body)
        self.size += len(body)
        while len(self.entries) > self.max_entries or self.size > self.max_bytes:
            _, (_, _, old) = self.entries.popitem(last=False)
            self.size -= len(old)


class ConditionalGet:
    """ETag / Last-Modified on every 200 under /api/v1, a 304 when the client's copy is
    current, and a cache of whole JSON responses for the current data version."""

    def __init__(
        self, app: ASGIApp, max_entries: int = 4096, max_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.app = app
        self.cache = ResponseCache(max_entries, max_bytes)
        self.reader: VersionReader | None = None
        # The misses being answered, by version and URL: the same URL asked again meanwhile
        # waits for that answer instead of computing it too (64 clients opening a cold
        # dimension page ran 64 copies of a 70 ms query, each slower for the others). The
        # Event is made by the first request that waits: most misses have none, and an anyio
        # Event costs a few µs to make.
        self.answering: dict[tuple[str, bytes], list[anyio.Event]] = {}

    async def version(self, app: Any) -> tuple[str, str] | None:
        if self.reader is None:
            self.reader = version_reader(app)
        return await self.reader()

    def close(self) -> None:
        """Closes the connection the version is read on."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the app's whole life: close once it has shut down
            try:
                await self.app(scope, receive, send)
            finally:
                self.close()
            return
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not path.startswith(CACHED_PREFIX)
            or path.startswith(UNCACHED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        try:
            version = await self.version(scope["app"])
        except SQLAlchemyError:
            version = None  # let the route answer; a database that is down gives its 503
        if version is None:
            await self.app(scope, receive, send)
            return
        etag, last_modified = version
        validators = [(b"etag", etag.encode()), (b"last-modified", last_modified.encode())]
        request_headers = Headers(scope=scope)
        if_none_match = request_headers.get("if-none-match")
        if_modified_since = request_headers.get("if-modified-since")
        fresh = (
            _matches(if_none_match, etag)
            if if_none_match is not None
            else if_modified_since is not None
            and _not_modified_since(if_modified_since, last_modified)
        )
        if fresh:
            await send({"type": "http.response.start", "status": 304, "headers": validators})
            await send({"type": "http.response.body", "body": b""})
            return

        key = path.encode() + b"?" + scope.get("query_string", b"")
        if await self.answered(etag, key, send):
            return
        answering: list[anyio.Event] | None = None  # set once this request's answer is known
        if self.cache.max_entries:
            first = self.answering.get((etag, key))
            if first is not None:
                if not first:
                    first.append(anyio.Event())
                await first[0].wait()
                if await self.answered(etag, key, send):
                    return  # else it was not cacheable (an error, say): this request asks itself
            else:
                answering = self.answering[etag, key] = []

        def answer_known() -> None:
            """Wakes the requests waiting for this one: its answer is cached, or won't be."""
            nonlocal answering
            if answering is not None:
                if self.answering.get((etag, key)) is answering:
                    del self.answering[etag, key]
                for waited in answering:
                    waited.set()
                answering = None

        cacheable: list[tuple[bytes, bytes]] | None = None  # the headers of a JSON 200

        async def with_validators(message: Message) -> None:
            nonlocal cacheable
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    headers = MutableHeaders(scope=message)
                    headers["ETag"] = etag
                    headers["Last-Modified"] = last_modified
                    if headers.get("content-type", "").startswith("application/json"):
                        cacheable = list(message["headers"])  # copied before CORS adds its own
                if cacheable is None:
                    answer_known()  # a CSV stream, an error: the others need not wait for it
            elif message["type"] == "http.response.body" and cacheable is not None:
                if not message.get("more_body", False):  # JSON comes whole, in one message
                    self.cache.put(etag, key, 200, cacheable, message.get("body", b""))
                cacheable = None
                answer_known()
            await send(message)

        try:
            await self.app(scope, receive, with_validators)
        finally:
            answer_known()

    async def answered(self, etag: str, key: bytes, send: Send) -> bool:
        """Sends the cached answer, if there is one."""
        hit = self.cache.get(etag, key)
        if hit is None:
            return False
        status, headers, body = hit
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True
