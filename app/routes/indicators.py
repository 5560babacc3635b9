"""Indicators: what each value measures (basis, unit) and what it must not be compared with."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import col, select

from app.auth import ReasonQuery, WriterDep
from app.db import SessionDep
from app.errors import NotFound, problem_responses
from app.export import csv_responses, indicators_export
from app.models import (
    Dimension,
    Indicator,
    IndicatorCreate,
    IndicatorPublic,
    IndicatorUpdate,
    Observation,
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
from app.queries import check_codes, indicator_dicts, indicator_select, paginate
from app.routes import API_PREFIX, code_path
from app.writes import Conflict, create_row, delete_row, update_row

router = APIRouter(prefix=f"{API_PREFIX}/indicators", tags=["indicators"])

DimensionQuery = Annotated[
    Codes | None, codes_query("dimensions", "new_industries", "new_drivers,new_models")
]


def indicator_by_code(
    session: SessionDep,
    code: Annotated[str, code_path("Indicator", "sei_va_share_gdp")],
) -> Indicator:
    indicator = session.get(Indicator, code)
    if indicator is None:
        raise NotFound("indicator", code, "/api/v1/indicators")
    return indicator


IndicatorDep = Annotated[Indicator, Depends(indicator_by_code)]


def dimension_codes(session: SessionDep, dimension: DimensionQuery = None) -> list[str]:
    codes = split_codes(dimension)
    check_codes(session, Dimension, codes, "dimension", "/api/v1/dimensions")
    return codes


@router.get("", responses=problem_responses(422), summary="List indicators")
def list_indicators(
    request: Request,
    response: Response,
    session: SessionDep,
    dimensions: Annotated[list[str], Depends(dimension_codes)],
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ListPage[IndicatorPublic]:
    """Indicators ordered by code, each with its definition, basis (numerator, denominator,
    scope), unit and comparability family."""
    page = paginate(session, indicator_select(dimensions), col(Indicator.code), limit, cursor)
    return page_of(request, response, page, limit, indicator_dicts(session, page.rows))


@router.get(
    ".csv",
    response_class=StreamingResponse,
    responses={**csv_responses("Every matching indicator"), **problem_responses(422)},
    summary="Export indicators as CSV",
)
def indicators_csv(
    request: Request,
    dimensions: Annotated[list[str], Depends(dimension_codes)],
    bom: BomQuery = False,
) -> StreamingResponse:
    """Every matching indicator as RFC 4180 CSV, basis flattened into columns."""
    return indicators_export(dimensions).response(request.app.state.engine, bom)


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    """The API nests numerator, denominator and scope under `basis`; the table does not."""
    basis = data.pop("basis", None)
    return {**data, **(basis or {})}


def _public(session: SessionDep, code: str) -> IndicatorPublic:
    row = session.exec(indicator_select().where(col(Indicator.code) == code)).one()  # type: ignore[call-overload]
    return IndicatorPublic.model_validate(indicator_dicts(session, [row])[0])


@router.post(
    "",
    status_code=201,
    responses=problem_responses(401, 403, 409, 422),
    summary="Create an indicator",
)
def create_indicator(
    response: Response,
    curator: WriterDep,
    session: SessionDep,
    body: IndicatorCreate,
    reason: ReasonQuery,
) -> IndicatorPublic:
    """Adds an indicator with its basis, unit, dimension and optional comparability family
    (needs a `write` key). Values on a different basis belong in a different indicator."""
    row = Indicator.model_validate(_flat(body.model_dump()))
    create_row(session, "indicator", row, body.code, curator.name, reason)
    session.commit()
    response.headers["Location"] = f"/api/v1/indicators/{body.code}"
    return _public(session, body.code)


@router.patch(
    "/{code}", responses=problem_responses(401, 403, 404, 409, 422), summary="Update an indicator"
)
def update_indicator(
    curator: WriterDep,
    session: SessionDep,
    indicator: IndicatorDep,
    body: IndicatorUpdate,
    reason: ReasonQuery,
) -> IndicatorPublic:
    """Changes the fields sent (needs a `write` key). The unit cannot change while observations
    use the indicator (409): their values would silently change meaning."""
    changes = _flat(body.model_dump(exclude_unset=True))
    if (
        changes.get("unit_code", indicator.unit_code) != indicator.unit_code
        and session.exec(
            select(Observation.id).where(Observation.indicator_code == indicator.code).limit(1)
        ).first()
    ):
        raise Conflict(
            f"Indicator {indicator.code!r} has observations in {indicator.unit_code!r}; its unit cannot change."
        )
    update_row(session, "indicator", indicator, changes, curator.name, reason)
    session.commit()
    return _public(session, indicator.code)


@router.delete(
    "/{code}",
    status_code=204,
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Delete an indicator",
)
def delete_indicator(
    curator: WriterDep, session: SessionDep, indicator: IndicatorDep, reason: ReasonQuery
) -> None:
    """Deletes an indicator no observation uses (needs a `write` key); 409 otherwise."""
    delete_row(session, "indicator", indicator, indicator.code, curator.name, reason)
    session.commit()


@router.get("/{code}", responses=problem_responses(404, 422), summary="One indicator")
def get_indicator(session: SessionDep, indicator: IndicatorDep) -> IndicatorPublic:
    """The indicator with its basis, unit and comparability family (and the family's members)."""
    return _public(session, indicator.code)
