"""Cities, each with its latest value per indicator, grouped by the four dimensions."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, bindparam
from sqlmodel import col, select

from app.auth import ReasonQuery, WriterDep
from app.csvio import cities_export, csv_responses
from app.db import SessionDep, read
from app.errors import NotFound, problem_responses
from app.models import (
    City,
    CityCreate,
    CityDetail,
    CityIndustry,
    CityPublic,
    CityUpdate,
    Dimension,
)
from app.pagination import BomQuery, CursorQuery, LimitQuery, ListPage, page_of
from app.prepared import Reader
from app.queries import (
    FilterShape,
    ObservationFilter,
    observations_select,
    paginate,
    with_derived_from,
)
from app.routes import API_PREFIX, code_path
from app.writes import create_row, delete_row, update_row

router = APIRouter(prefix=f"{API_PREFIX}/cities", tags=["cities"])
CITY = City.__table__  # type: ignore[attr-defined]
DIMENSION = Dimension.__table__  # type: ignore[attr-defined]
INDUSTRY = CityIndustry.__table__  # type: ignore[attr-defined]


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


def _city_select() -> Select[Any]:
    return select(*CITY.c).where(CITY.c.code == bindparam("code"))  # type: ignore[no-any-return]


def _latest_select(shape: FilterShape) -> Select[Any]:
    return observations_select(ObservationFilter.of_shape(shape)).order_by("indicator_code")


def _dimensions_select() -> Select[Any]:
    return select(*DIMENSION.c).order_by(DIMENSION.c.position)  # type: ignore[no-any-return]


def _industries_select() -> Select[Any]:
    where = INDUSTRY.c.city_code == bindparam("code")
    return select(*INDUSTRY.c).where(where).order_by(INDUSTRY.c.id)  # type: ignore[no-any-return]


def city_detail(reader: Reader, code: str) -> dict[str, Any]:
    """The city, its latest values under every dimension, and its industries; prepared
    statements, like the observation list's."""
    city = reader.dicts(_city_select, (), {"code": code})
    if not city:
        raise NotFound("city", code, "/api/v1/cities")
    latest_only = ObservationFilter(cities=[code], latest=True)
    latest = with_derived_from(
        reader, reader.dicts(_latest_select, (latest_only.shape(),), latest_only.params())
    )
    return {
        **city[0],
        "dimensions": [
            {**d, "latest": [o for o in latest if o["dimension_code"] == d["code"]]}
            for d in reader.dicts(_dimensions_select, (), {})
        ],
        "industries": reader.dicts(_industries_select, (), {"code": code}),
    }


@router.get(
    "/{code}",
    response_model=CityDetail,
    responses=problem_responses(404, 422),
    summary="One city with its latest values",
)
async def get_city(request: Request, code: CityCode) -> Any:
    """The city, its latest value for every indicator it has (grouped under all four dimensions,
    in the source's order), and the industries the source names for it."""
    return await read(request, lambda reader: city_detail(reader, code))


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
