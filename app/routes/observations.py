"""Observations: one value of one indicator for one city and period, with its provenance."""

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator
from sqlmodel import select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from app.auth import ReasonQuery, WriterDep
from app.config import Settings
from app.db import READ_METHODS, SessionDep
from app.errors import NotFound, problem_responses
from app.export import csv_responses, observations_export
from app.imports import CSV_UPLOAD_TYPES, apply_import
from app.models import (
    ImportReport,
    Observation,
    ObservationCreate,
    ObservationPublic,
    ObservationRevision,
    ObservationUpdate,
    RevisionPublic,
)
from app.pagination import (
    BomQuery,
    Codes,
    CursorQuery,
    LimitQuery,
    ListPage,
    codes_query,
    page_of,
    split_codes,
)
from app.queries import (
    ObservationFilter,
    observation_dicts,
    observation_page,
    observations_select,
    paginate,
)
from app.routes import API_PREFIX
from app.writes import (
    create_observation,
    delete_observation,
    update_observation,
)

router = APIRouter(prefix=API_PREFIX, tags=["observations"])

DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _date_time_text(value: object) -> object:
    """A date and time, as the schema's `date-time` says (lax parsing also took a bare date,
    and numbers as Unix timestamps)."""
    if isinstance(value, str) and not DATE_TIME.match(value):
        raise ValueError("expected an ISO 8601 date and time, e.g. 2026-01-01T00:00:00Z")
    return value


async def observation_filter(
    city: Annotated[Codes | None, codes_query("cities", "ningbo", "ningbo,shenzhen")] = None,
    indicator: Annotated[Codes | None, codes_query("indicators", "nev_output")] = None,
    dimension: Annotated[Codes | None, codes_query("dimensions", "new_industries")] = None,
    year_from: Annotated[
        int | None,
        Query(
            ge=1900,
            le=2200,
            description="Only periods from this year on. Undated rows are excluded.",
            openapi_examples={"2023 on": {"value": 2023}},
        ),
    ] = None,
    year_to: Annotated[
        int | None,
        Query(
            ge=1900,
            le=2200,
            description="Only periods up to this year. Undated rows are excluded.",
            openapi_examples={"up to 2023": {"value": 2023}},
        ),
    ] = None,
    latest: Annotated[
        bool,
        Query(
            description="Only the newest value per city and indicator (after the other filters). "
            "An undated value counts as of its source's reference year.",
            openapi_examples={"newest only": {"value": True}, "every period": {"value": False}},
        ),
    ] = False,
    as_of: Annotated[
        datetime | None,
        BeforeValidator(_date_time_text),
        Query(
            description="The data as it stood at this moment (ISO 8601; UTC if no offset): "
            "later corrections are undone, later deletions restored, later additions hidden.",
            openapi_examples={"moment": {"value": "2026-01-01T00:00:00Z"}},
        ),
    ] = None,
) -> ObservationFilter:
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    return ObservationFilter(
        cities=split_codes(city),
        indicators=split_codes(indicator),
        dimensions=split_codes(dimension),
        year_from=year_from,
        year_to=year_to,
        latest=latest,
        as_of=as_of,
    )


FilterDep = Annotated[ObservationFilter, Depends(observation_filter)]


@router.get("/observations", responses=problem_responses(422), summary="List observations")
def list_observations(
    request: Request,
    response: Response,
    session: SessionDep,
    filters: FilterDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ListPage[ObservationPublic]:
    """Observations ordered by id, each with unit, period, value, the qualifier it was stated
    with, whether it is derived (and from which observations), its source and the verbatim quote.
    Unknown codes in a filter are a 422, not an empty page."""
    page = observation_page(session, filters, limit, cursor)
    return page_of(request, response, page, limit)


@router.get(
    "/observations.csv",
    response_class=StreamingResponse,
    responses={**csv_responses("Every matching observation"), **problem_responses(422)},
    summary="Export observations as CSV",
)
def observations_csv(
    request: Request, session: SessionDep, filters: FilterDep, bom: BomQuery = False
) -> StreamingResponse:
    """Every matching observation (same filters as the JSON list, no page cap), streamed.
    `derived_from` lists input observations as `city/indicator/period` keys, `;`-separated."""
    filters.check(session)
    return observations_export(filters).response(request.app.state.engine, bom)


async def _observation_id(
    id: Annotated[
        int,
        Path(
            ge=1,
            le=2**31 - 1,  # observation.id is INTEGER: 32-bit on PostgreSQL
            description="Observation id.",
            openapi_examples={"one": {"value": 12}},
        ),
    ],
) -> int:
    return id


def observation_by_id(
    request: Request, session: SessionDep, id: Annotated[int, Depends(_observation_id)]
) -> Observation:
    """The live observation, or 404 (a deleted one too; its history stays readable). A write
    locks the row (FOR UPDATE on PostgreSQL; SQLite's write lock is already held)."""
    obs = session.get(Observation, id, with_for_update=request.method not in READ_METHODS)
    if obs is None or obs.deleted_at is not None:
        raise NotFound("observation", id, "/api/v1/observations")
    return obs


ObservationDep = Annotated[Observation, Depends(observation_by_id)]


def _public(session: SessionDep, obs: Observation) -> ObservationPublic:
    stmt = observations_select(ObservationFilter())
    row = session.exec(stmt.where(stmt.selected_columns.id == obs.id)).one()  # type: ignore[call-overload]
    return ObservationPublic.model_validate(observation_dicts(session, [row])[0])


@router.get("/observations/{id}", responses=problem_responses(404, 422), summary="One observation")
def get_observation(session: SessionDep, obs: ObservationDep) -> ObservationPublic:
    """The observation as it stands now; see `/history` for every earlier version."""
    return _public(session, obs)


@router.post(
    "/observations",
    status_code=201,
    responses=problem_responses(401, 403, 409, 422),
    summary="Create an observation",
)
def create_observation_route(
    response: Response,
    curator: WriterDep,
    session: SessionDep,
    body: ObservationCreate,
    reason: ReasonQuery,
) -> ObservationPublic:
    """Adds a value (needs a `write` key). 422 for unknown codes, a unit that is not the
    indicator's, a bad qualifier, or a derived value whose inputs do not exist; 409 if the
    city, indicator, period and source already have a value (PATCH it instead)."""
    data = body.model_dump(exclude={"derived_from", "unit_code"})
    obs = create_observation(session, data, body.derived_from, body.unit_code, curator.name, reason)
    public = _public(session, obs)  # read in the write's transaction: no second one after it
    session.commit()
    response.headers["Location"] = f"/api/v1/observations/{obs.id}"
    return public


@router.patch(
    "/observations/{id}",
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Correct an observation",
)
def update_observation_route(
    curator: WriterDep,
    session: SessionDep,
    obs: ObservationDep,
    body: ObservationUpdate,
    reason: ReasonQuery,
) -> ObservationPublic:
    """Writes a new version (needs a `write` key); the old one stays in the history, with who
    changed it, when and why. A change that changes nothing writes no version."""
    changes = body.model_dump(exclude_unset=True, exclude={"derived_from", "unit_code"})
    changed = update_observation(
        session, obs, changes, body.derived_from, body.unit_code, curator.name, reason
    )
    public = _public(session, obs)  # read in the write's transaction: no second one after it
    if changed:
        session.commit()
    return public


@router.delete(
    "/observations/{id}",
    status_code=204,
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Delete an observation",
)
def delete_observation_route(
    curator: WriterDep, session: SessionDep, obs: ObservationDep, reason: ReasonQuery
) -> None:
    """Soft delete (needs a `write` key): gone from current reads, kept in the history and in
    `as_of` reads. 409 while a live derived value uses it as an input."""
    delete_observation(session, obs, curator.name, reason)
    session.commit()


@router.get(
    "/observations/{id}/history",
    responses=problem_responses(404, 422),
    summary="Every version of an observation",
)
def observation_history(
    request: Request,
    response: Response,
    session: SessionDep,
    id: Annotated[int, Depends(_observation_id)],
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ListPage[RevisionPublic]:
    """Versions oldest first: value, qualifier, source and quote after each write, who wrote it
    (the API key's name), when and why. A deleted observation keeps its history."""
    if session.get(Observation, id) is None:
        raise NotFound("observation", id, "/api/v1/observations")
    r = ObservationRevision.__table__.c  # type: ignore[attr-defined]
    stmt = select(*ObservationRevision.__table__.c).where(r.observation_id == id)  # type: ignore[attr-defined]
    page = paginate(session, stmt, r.id, limit, cursor)
    return page_of(request, response, page, limit, [dict(row._mapping) for row in page.rows])


IMPORT_EXAMPLE = (
    "city_code,indicator_code,unit_code,period,value,value_text,qualifier,is_derived,formula,"
    "derived_from,source_id,quote,note\r\n"
    "ningbo,ic_output,cny_100m,2023,545,545 亿元,exact,false,,,1,"
    "2023年，宁波集成电路完成产值 545 亿元，五年年均增速达 23%。,\r\n"
)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"The file is {declared} bytes; imports take at most {limit}.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(
                413, f"The file is larger than {limit} bytes, the most an import takes."
            )
    return bytes(body)


@router.post(
    "/observations/import",
    responses=problem_responses(401, 403, 409, 413, 415, 422),
    summary="Import observations from CSV (all or nothing)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}, "example": IMPORT_EXAMPLE}},
        }
    },
)
async def import_observations_route(
    request: Request,
    curator: WriterDep,
    session: SessionDep,
    reason: ReasonQuery,
    dry_run: Annotated[
        bool,
        Query(
            description="Check and count (added, updated, unchanged) without writing.",
            openapi_examples={"check first": {"value": True}, "write": {"value": False}},
        ),
    ] = False,
) -> ImportReport:
    """Takes a CSV with the columns of `/observations.csv` (so an export can be edited and sent
    back; `id`, `dimension_code` and `unit_code` are checked or ignored), UTF-8 with or without
    a BOM, CRLF or LF. Rows are matched to stored values by city, indicator, period and source.
    One bad row rejects the whole file: the 422 lists every error with its line and column, and
    nothing is written. Needs a `write` key."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_UPLOAD_TYPES:
        raise HTTPException(
            415, f"Send the file as text/csv, not {media_type or 'no content type'}."
        )
    settings: Settings = request.app.state.settings
    data = await _read_body(request, settings.import_max_bytes)
    return await run_in_threadpool(
        apply_import, session, data, settings, curator.name, reason, dry_run
    )
