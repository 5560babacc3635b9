"""Liveness and readiness for load balancers and the Docker healthcheck."""

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import text

from app.db import SessionDep
from app.errors import problem_responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The service and its database answer."""

    status: Literal["ok"] = Field(description="The service answers.", examples=["ok"])
    database: Literal["ok"] = Field(
        description="The database answered a query (SELECT 1).", examples=["ok"]
    )


@router.get(
    "/healthz",
    summary="Health check",
    responses=problem_responses(503),
)
def healthz(session: SessionDep) -> Health:
    """`200 {"status": "ok", "database": "ok"}` when the database answers a query."""
    session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    return Health(status="ok", database="ok")
