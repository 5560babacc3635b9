"""The audit log: every write, by whom, when, what changed and why (admin keys only)."""

from fastapi import APIRouter, Request, Response
from sqlmodel import col, select

from app.auth import AdminDep
from app.db import SessionDep
from app.errors import problem_responses
from app.models import AuditEvent, AuditEventPublic
from app.pagination import CursorQuery, LimitQuery, ListPage, page_of
from app.queries import paginate
from app.routes import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"])


@router.get("", responses=problem_responses(401, 403, 422), summary="The audit log")
def list_audit_events(
    request: Request,
    response: Response,
    curator: AdminDep,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ListPage[AuditEventPublic]:
    """Writes oldest first: key name, time, action, resource, the changes as JSON and the
    reason given. Needs an `admin` key."""
    stmt = select(*AuditEvent.__table__.c)  # type: ignore[attr-defined]
    page = paginate(session, stmt, col(AuditEvent.id), limit, cursor)
    return page_of(request, response, page, limit, [dict(r._mapping) for r in page.rows])
