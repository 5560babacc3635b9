"""Sources: where each value was published, and what is known or inferred about it."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlmodel import col, select

from app.db import SessionDep
from app.errors import NotFound, problem_responses
from app.models import Source, SourcePublic
from app.pagination import CursorQuery, LimitQuery, ListPage, page_of
from app.queries import paginate

router = APIRouter(prefix="/sources", tags=["sources"])


def source_by_id(
    session: SessionDep,
    id: Annotated[
        int,
        Path(ge=1, le=2**31 - 1, description="Source id.", openapi_examples={"one": {"value": 1}}),
    ],
) -> Source:
    source = session.get(Source, id)
    if source is None:
        raise NotFound("source with id", id, "/api/v1/sources")
    return source


SourceDep = Annotated[Source, Depends(source_by_id)]


@router.get("", responses=problem_responses(422), summary="List sources")
def list_sources(
    request: Request,
    response: Response,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ListPage[SourcePublic]:
    """Sources ordered by id."""
    page = paginate(session, select(*Source.__table__.c), col(Source.id), limit, cursor)  # type: ignore[attr-defined]
    return page_of(request, response, page, limit, [dict(r._mapping) for r in page.rows])


@router.get("/{id}", responses=problem_responses(404, 422), summary="One source")
def get_source(source: SourceDep) -> SourcePublic:
    """Title, publication, reporter, interviewee and date, with how each was read or inferred."""
    return SourcePublic.model_validate(source.model_dump())
