"""Conditional GET for the API: ETag and Last-Modified from the data version, 304 on a match.

The data version is the newest audit event: every write records one, so any write changes
every ETag, and nothing can serve stale data after a write.
"""

from email.utils import format_datetime, parsedate_to_datetime

from sqlalchemy import Engine, desc, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.models import AuditEvent

CACHED_PREFIX = "/api/v1/"
AUDIT = AuditEvent.__table__  # type: ignore[attr-defined]


def data_version(engine: Engine) -> tuple[str, str] | None:
    """(ETag, Last-Modified) of the data now, or None for a database with no writes yet."""
    with engine.connect() as conn:
        row = conn.execute(
            select(AUDIT.c.id, AUDIT.c.at).order_by(desc(AUDIT.c.id)).limit(1)
        ).first()
    if row is None:
        return None
    return f'W/"v{row.id}"', format_datetime(row.at, usegmt=True)


def _matches(if_none_match: str, etag: str) -> bool:
    tags = {t.strip() for t in if_none_match.split(",")}
    return "*" in tags or etag in tags or etag.removeprefix("W/") in tags


def _not_modified_since(if_modified_since: str, last_modified: str) -> bool:
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False


class ConditionalGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not scope["path"].startswith(CACHED_PREFIX)
            or scope["path"].startswith("/api/v1/audit")
        ):
            await self.app(scope, receive, send)
            return
        try:
            version = await run_in_threadpool(data_version, scope["app"].state.engine)
        except SQLAlchemyError:
            version = None  # let the route answer; a database that is down gives its 503
        if version is None:
            await self.app(scope, receive, send)
            return
        etag, last_modified = version
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
            headers = [(b"etag", etag.encode()), (b"last-modified", last_modified.encode())]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def with_validators(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                headers = MutableHeaders(scope=message)
                headers["ETag"] = etag
                headers["Last-Modified"] = last_modified
            await send(message)

        await self.app(scope, receive, with_validators)
