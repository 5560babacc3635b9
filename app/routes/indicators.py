"""Indicators: what each value measures (basis, unit) and what it must not be compared with."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import col

from app.csvio import csv_responses, indicators_export
from app.db import SessionDep
from app.errors import NotFound, problem_responses
from app.models import Dimension, Indicator, IndicatorPublic
from app.pagination import (
    BomQuery,
    CursorQuery,
    LimitQuery,
    ListPage,
    codes_query,
    page_of,
    split_codes,
)
from app.queries import check_codes, indicator_dicts, indicator_select, paginate

router = APIRouter(prefix="/indicators", tags=["indicators"])

DimensionQuery = Annotated[
    list[str] | None, codes_query("dimensions", "new_industries", "new_drivers,new_models")
]


def indicator_by_code(
    session: SessionDep,
    code: Annotated[
        str,
        Path(
            max_length=64,
            description="Indicator code.",
            openapi_examples={"sei_va_share_gdp": {"value": "sei_va_share_gdp"}},
        ),
    ],
) -> Indicator:
    indicator = session.get(Indicator, code)
    if indicator is None:
        raise NotFound("indicator", code, "/api/v1/indicators")
    return indicator


IndicatorDep = Annotated[Indicator, Depends(indicator_by_code)]


def _dimensions(session: SessionDep, dimension: DimensionQuery = None) -> list[str]:
    codes = split_codes(dimension)
    check_codes(session, Dimension, codes, "dimension", "/api/v1/dimensions")
    return codes


@router.get("", responses=problem_responses(422), summary="List indicators")
def list_indicators(
    request: Request,
    response: Response,
    session: SessionDep,
    dimensions: Annotated[list[str], Depends(_dimensions)],
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
    dimensions: Annotated[list[str], Depends(_dimensions)],
    bom: BomQuery = False,
) -> StreamingResponse:
    """Every matching indicator as RFC 4180 CSV, basis flattened into columns."""
    return indicators_export(dimensions).response(request.app.state.engine, bom)


@router.get("/{code}", responses=problem_responses(404, 422), summary="One indicator")
def get_indicator(session: SessionDep, indicator: IndicatorDep) -> IndicatorPublic:
    """The indicator with its basis, unit and comparability family (and the family's members)."""
    row = session.exec(indicator_select().where(col(Indicator.code) == indicator.code)).one()  # type: ignore[call-overload]
    return IndicatorPublic.model_validate(indicator_dicts(session, [row])[0])
