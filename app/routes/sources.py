"""Sources: where each value was published, and what is known or inferred about it."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlmodel import col, select

from app.auth import ReasonQuery, WriterDep
from app.db import SessionDep
from app.errors import NotFound, problem_responses
from app.models import Source, SourceCreate, SourcePublic, SourceUpdate
from app.pagination import CursorQuery, LimitQuery, ListPage, page_of
from app.queries import paginate
from app.routes import API_PREFIX
from app.writes import create_row, delete_row, update_row

router = APIRouter(prefix=f"{API_PREFIX}/sources", tags=["sources"])


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


@router.post(
    "", status_code=201, responses=problem_responses(401, 403, 422), summary="Create a source"
)
def create_source(
    response: Response,
    curator: WriterDep,
    session: SessionDep,
    body: SourceCreate,
    reason: ReasonQuery,
) -> SourcePublic:
    """Adds a source (needs a `write` key); the server assigns its id."""
    source = Source.model_validate(body.model_dump())
    create_row(session, "source", source, None, curator.name, reason)
    session.commit()
    response.headers["Location"] = f"/api/v1/sources/{source.id}"
    return SourcePublic.model_validate(source.model_dump())


@router.patch("/{id}", responses=problem_responses(401, 403, 404, 422), summary="Update a source")
def update_source(
    curator: WriterDep,
    session: SessionDep,
    source: SourceDep,
    body: SourceUpdate,
    reason: ReasonQuery,
) -> SourcePublic:
    """Changes the fields sent (needs a `write` key)."""
    update_row(session, "source", source, body.model_dump(exclude_unset=True), curator.name, reason)
    session.commit()
    return SourcePublic.model_validate(source.model_dump())


@router.delete(
    "/{id}",
    status_code=204,
    responses=problem_responses(401, 403, 404, 409, 422),
    summary="Delete a source",
)
def delete_source(
    curator: WriterDep, session: SessionDep, source: SourceDep, reason: ReasonQuery
) -> None:
    """Deletes a source nothing refers to (needs a `write` key); 409 otherwise."""
    delete_row(session, "source", source, source.id, curator.name, reason)
    session.commit()


@router.get("/{id}", responses=problem_responses(404, 422), summary="One source")
def get_source(source: SourceDep) -> SourcePublic:
    """Title, publication, reporter, interviewee and date, with how each was read or inferred."""
    return SourcePublic.model_validate(source.model_dump())
