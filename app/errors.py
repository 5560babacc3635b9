"""The one error shape: RFC 9457 problem+json, for every error the service returns."""

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError, InternalError, OperationalError
from starlette.exceptions import HTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("app")


class FieldError(BaseModel):
    """One invalid input."""

    loc: str = Field(
        description="Where the bad input is, e.g. `query.limit`.", examples=["query.limit"]
    )
    msg: str = Field(
        description="What is wrong with it.", examples=["Input should be less than or equal to 500"]
    )
    type: str = Field(description="A machine-readable error kind.", examples=["less_than_equal"])
    line: int | None = Field(None, description="CSV imports: the line of the file (header = 1).")
    column: str | None = Field(None, description="CSV imports: the column's name.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field("about:blank", description="A URI naming the problem type.")
    title: str = Field(description="The HTTP status phrase.", examples=["Not Found"])
    status: int = Field(description="The HTTP status code.", examples=[404])
    detail: str = Field(
        description="What went wrong, for a human.",
        examples=["No city with code 'atlantis'. List the valid codes at /api/v1/cities."],
    )
    instance: str = Field(
        description="The path of the request.", examples=["/api/v1/cities/atlantis"]
    )
    errors: list[FieldError] | None = Field(
        None, description="One entry per invalid input (422 only)."
    )


class NotFound(HTTPException):
    """An unknown code or id; the message says where the valid ones are listed."""

    def __init__(self, what: str, key: object, listing: str) -> None:
        super().__init__(404, f"No {what} {key!r}. List the valid ones at {listing}.")


class BadRequest(HTTPException):
    """Input that parses but does not make sense (an unknown code, a bad cursor, a unit that
    is not the indicator's); `errors` lists (field, message) pairs where there are several."""

    def __init__(self, detail: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(422, detail)
        self.errors = [
            FieldError(loc=f"body.{f}", msg=m, type="value_error") for f, m in errors or []
        ]


def problem(request: Request, status: int, detail: str, **extra: Any) -> JSONResponse:
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        **extra,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_JSON
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    errors = getattr(exc, "errors", None) or None
    response = problem(request, exc.status_code, str(exc.detail), errors=errors)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(loc=".".join(str(p) for p in e["loc"]), msg=e["msg"], type=e["type"])
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e.loc}: {e.msg}" for e in errors) or "Invalid request."
    return problem(request, 422, detail, errors=errors)


UNAVAILABLE = (
    "The database is unavailable (down, read-only or full), or the query ran longer than the "
    "statement timeout (problem+json)."
)
RETRY_AFTER_S = 5


SQLITE_ERROR = 1  # SQLite's generic code: a statement it cannot run, i.e. our bug, not a fault


def unavailable(exc: DBAPIError) -> bool:
    """Whether the database, not the statement, is at fault: down, unreachable, read-only,
    full or locked. (SQLite reports a bad statement as an OperationalError too.)"""
    if not isinstance(exc, OperationalError | InternalError):
        return False
    return getattr(exc.orig, "sqlite_errorcode", None) != SQLITE_ERROR


def timed_out(exc: DBAPIError) -> bool:
    """Whether the statement was cancelled by the statement timeout (db.make_engine)."""
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "57014" or str(orig) == "interrupted"


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A driver error the routes did not expect. A conflicting write that raced past the
    route's own check is a 409; a timeout, or a database that is down, read-only or full, is
    a 503; anything else is a bug, and a 500."""
    assert isinstance(exc, DBAPIError)
    if isinstance(exc, IntegrityError):
        log.warning("conflict on %s: %s", request.url.path, exc.orig)
        return problem(
            request, 409, "The write conflicts with data written meanwhile; nothing was written."
        )
    if timed_out(exc):
        log.warning("statement timeout on %s", request.url.path)
        return problem(
            request, 503, "The query ran longer than the statement timeout; narrow its filters."
        )
    if unavailable(exc):
        log.error("database unavailable on %s: %s", request.url.path, exc.orig)
        response = problem(request, 503, "The database is unavailable; try again shortly.")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    return await unexpected_error(request, exc)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return problem(request, 500, "The server failed to answer this request.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, unexpected_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for routes: descriptions only. main._openapi() gives each its
    problem+json content and adds the Problem schemas once."""
    descriptions = {
        404: "Unknown code or id (problem+json).",
        401: "No API key, or an unknown or revoked one (problem+json).",
        403: "The key's scope does not allow this (problem+json).",
        409: "Conflicts with existing data (problem+json).",
        413: "The upload is too large (problem+json).",
        415: "The upload is not CSV (problem+json).",
        422: "Invalid parameter or body (problem+json).",
        503: UNAVAILABLE,
    }
    return {s: {"description": descriptions[s]} for s in statuses}
