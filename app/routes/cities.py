"""Cities, each with its latest value per indicator, grouped by the four dimensions."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import Session, col, select

from app.auth import ReasonQuery, WriterDep
from app.csvio import cities_export, csv_responses
from app.db import SessionDep
from app.errors import NotFound, problem_responses
from app.models import (
    CODE_PATTERN,
    City,
    CityCreate,
    CityDetail,
    CityIndustry,
    CityPublic,
    CityUpdate,
    Dimension,
)
from app.pagination import BomQuery, CursorQuery, LimitQuery, ListPage, page_of
from app.queries import ObservationFilter, observation_dicts, observations_select, paginate
from app.routes import API_PREFIX
from app.writes import create_row, delete_row, update_row

router = APIRouter(prefix=f"{API_PREFIX}/cities", tags=["cities"])


def city_by_code(
    session: SessionDep,
    code: Annotated[
        str,
        Path(
            max_length=64,
            pattern=CODE_PATTERN,
            description="City code.",
            openapi_examples={"ningbo": {"value": "ningbo"}},
        ),
    ],
) -> City:
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


def city_detail(session: Session, city: City) -> CityDetail:
    latest = observation_dicts(
        session,
        session.exec(  # type: ignore[call-overload]
            observations_select(ObservationFilter(cities=[city.code], latest=True)).order_by(
                "indicator_code"
            )
        ).all(),
    )
    dimensions = session.exec(select(Dimension).order_by(col(Dimension.position))).all()
    industries = session.exec(
        select(CityIndustry)
        .where(CityIndustry.city_code == city.code)
        .order_by(col(CityIndustry.id))
    ).all()
    return CityDetail.model_validate(
        {
            **city.model_dump(),
            "dimensions": [
                {**d.model_dump(), "latest": [o for o in latest if o["dimension_code"] == d.code]}
                for d in dimensions
            ],
            "industries": [i.model_dump() for i in industries],
        }
    )


@router.get(
    "/{code}", responses=problem_responses(404, 422), summary="One city with its latest values"
)
def get_city(session: SessionDep, city: CityDep) -> CityDetail:
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
