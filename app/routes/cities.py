"""Cities, each with its latest value per indicator, grouped by the four dimensions."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import col, select

from app.auth import ReasonQuery, WriterDep
from app.db import SessionDep
from app.errors import NotFound, problem_responses
from app.export import cities_export, csv_responses
from app.models import (
    City,
    CityCreate,
    CityDetail,
    CityPublic,
    CityUpdate,
)
from app.pagination import BomQuery, CursorQuery, LimitQuery, ListPage, page_of
from app.queries import city_detail, paginate
from app.routes import API_PREFIX, code_path
from app.writes import create_row, delete_row, update_row

router = APIRouter(prefix=f"{API_PREFIX}/cities", tags=["cities"])
CITY = City.__table__  # type: ignore[attr-defined]


CityCode = Annotated[str, code_path("City", "ningbo")]


def city_by_code(session: SessionDep, code: CityCode) -> City:
    city = session.get(City, code)
    if city is None:
        raise NotFound("city", code, "/api/v1/cities")
    return city


CityDep = Annotated[City, Depends(city_by_code)]


@router.get("", responses=problem_responses(422), summary="List cities")
def list_cities(
    request: Request,
    response: Response,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ListPage[CityPublic]:
    """Cities in the data set, ordered by code. Hangzhou is listed although the source gives it no figure."""
    page = paginate(session, select(*City.__table__.c), col(City.code), limit, cursor)  # type: ignore[attr-defined]
    return page_of(request, response, page, limit, [dict(r._mapping) for r in page.rows])


@router.get(
    ".csv",
    response_class=StreamingResponse,
    responses={**csv_responses("Every city"), **problem_responses(422)},
    summary="Export cities as CSV",
)
def cities_csv(request: Request, bom: BomQuery = False) -> StreamingResponse:
    """Every city as RFC 4180 CSV (UTF-8; `bom=true` for Excel)."""
    return cities_export().response(request.app.state.engine, bom)


@router.get(
    "/{code}",
    response_model=CityDetail,
    responses=problem_responses(404, 422),
    summary="One city with its latest values",
)
def get_city(session: SessionDep, city: CityDep) -> dict[str, Any]:
    """The city, its latest value for every indicator it has (grouped under all four dimensions,
    in the source's order), and the industries the source names for it."""
    return city_detail(session, city)


@router.post(
    "",
    status_code=201,
    responses=problem_responses(401, 403, 409, 422),
    summary="Create a city",
)
def create_city(
    response: Response,
    curator: WriterDep,
    session: SessionDep,
    body: CityCreate,
    reason: ReasonQuery,
) -> CityPublic:
    """Adds a city (needs a `write` key). Its code is a lowercase slug and cannot change later."""
    city = City.model_validate(body.model_dump())
    create_row(session, "city", city, body.code, curator.name, reason)
    session.commit()
    response.headers["Location"] = f"/api/v1/cities/{body.code}"
    return CityPublic.model_validate(city.model_dump())


@router.patch("/{code}", responses=problem_responses(401, 403, 404, 422), summary="Update a city")
def update_city(
    curator: WriterDep, session: SessionDep, city: CityDep, body: CityUpdate, reason: ReasonQuery
) -> CityPublic:
    """Changes the fields sent (needs a `write` key)."""
    update_row(session, "city", city, body.model_dump(exclude_unset=True), curator.name, reason)
    session.commit()
    return CityPublic.model_validate(city.model_dump())


@router.delete(
    "/{code}",
    status_code=204,
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Delete a city",
)
def delete_city(
    curator: WriterDep, session: SessionDep, city: CityDep, reason: ReasonQuery
) -> None:
    """Deletes a city that no observation or industry refers to (needs a `write` key); 409 otherwise."""
    delete_row(session, "city", city, city.code, curator.name, reason)
    session.commit()
