"""The four 'new' dimensions the source defines, and the indicators filed under each."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from sqlmodel import col, select

from app.db import SessionDep
from app.errors import NotFound, problem_responses
from app.models import Dimension, DimensionDetail, DimensionPublic
from app.pagination import CursorQuery, LimitQuery, ListPage, page_of
from app.queries import dimension_coverage, paginate
from app.routes import API_PREFIX, code_path

router = APIRouter(prefix=f"{API_PREFIX}/dimensions", tags=["dimensions"])


def dimension_by_code(
    session: SessionDep,
    code: Annotated[str, code_path("Dimension", "new_industries")],
) -> Dimension:
    dimension = session.get(Dimension, code)
    if dimension is None:
        raise NotFound("dimension", code, "/api/v1/dimensions")
    return dimension


DimensionDep = Annotated[Dimension, Depends(dimension_by_code)]


@router.get("", responses=problem_responses(422), summary="List the four dimensions")
def list_dimensions(
    request: Request,
    response: Response,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ListPage[DimensionPublic]:
    """新动力 new drivers, 新产业 new industries, 新模式 new models and 新生产关系 new production
    relations, with the source's own definitions, ordered by code."""
    page = paginate(
        session,
        select(*Dimension.__table__.c),  # type: ignore[attr-defined]
        col(Dimension.code),
        limit,
        cursor,
    )
    return page_of(request, response, page, limit, [dict(r._mapping) for r in page.rows])


@router.get(
    "/{code}", responses=problem_responses(404, 422), summary="One dimension with its indicators"
)
def get_dimension(session: SessionDep, dimension: DimensionDep) -> DimensionDetail:
    """The dimension, each of its indicators, and which cities have data for each."""
    return DimensionDetail.model_validate(
        {**dimension.model_dump(), "indicators": dimension_coverage(session, dimension.code)}
    )
