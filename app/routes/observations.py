"""Observations: one value of one indicator for one city and period, with its provenance."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.csvio import csv_responses, observations_export
from app.db import SessionDep
from app.errors import problem_responses
from app.models import ObservationPublic
from app.pagination import (
    BomQuery,
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
    observations_select,
    paginate,
)

router = APIRouter(tags=["observations"])


def observation_filter(
    session: SessionDep,
    city: Annotated[list[str] | None, codes_query("cities", "ningbo", "ningbo,shenzhen")] = None,
    indicator: Annotated[list[str] | None, codes_query("indicators", "nev_output")] = None,
    dimension: Annotated[list[str] | None, codes_query("dimensions", "new_industries")] = None,
    year_from: Annotated[
        int | None,
        Query(
            ge=1900,
            le=2200,
            description="Only periods from this year on. Undated rows are excluded.",
        ),
    ] = None,
    year_to: Annotated[
        int | None,
        Query(
            ge=1900, le=2200, description="Only periods up to this year. Undated rows are excluded."
        ),
    ] = None,
    latest: Annotated[
        bool,
        Query(
            description="Only the newest value per city and indicator (after the other filters). "
            "An undated value counts as of its source's reference year."
        ),
    ] = False,
) -> ObservationFilter:
    f = ObservationFilter(
        cities=split_codes(city),
        indicators=split_codes(indicator),
        dimensions=split_codes(dimension),
        year_from=year_from,
        year_to=year_to,
        latest=latest,
    )
    f.check(session)
    return f


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
    stmt = observations_select(filters)
    page = paginate(session, stmt, stmt.selected_columns.id, limit, cursor)
    return page_of(request, response, page, limit, observation_dicts(session, page.rows))


@router.get(
    "/observations.csv",
    response_class=StreamingResponse,
    responses={**csv_responses("Every matching observation"), **problem_responses(422)},
    summary="Export observations as CSV",
)
def observations_csv(
    request: Request, filters: FilterDep, bom: BomQuery = False
) -> StreamingResponse:
    """Every matching observation (same filters as the JSON list, no page cap), streamed.
    `derived_from` lists input observations as `city/indicator/period` keys, `;`-separated."""
    return observations_export(filters).response(request.app.state.engine, bom)
