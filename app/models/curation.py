"""Curators' API keys and the audit trail of every write."""

from datetime import datetime

from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from app.models.base import Scope, sql_in


class ApiKey(SQLModel, table=True):
    """A curator's key. Only its SHA-256 hash is stored; `prefix` finds the row."""

    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint(sql_in("scope", Scope), name="scope"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    scope: str = Field(max_length=16)
    created_at: datetime
    revoked_at: datetime | None = None


class AuditEventBase(SQLModel):
    at: datetime = Field(
        description="When (UTC).", schema_extra={"examples": ["2024-04-02T08:30:00Z"]}
    )
    actor: str = Field(
        max_length=128,
        description="API key name, or `seed` / `cli`.",
        schema_extra={"examples": ["seed"]},
    )
    action: str = Field(
        max_length=16,
        description="What was done: create, update, delete, import or seed.",
        schema_extra={"examples": ["update"]},
    )
    resource: str = Field(
        max_length=32,
        description="Kind of record written, e.g. observation or city.",
        schema_extra={"examples": ["observation"]},
    )
    resource_key: str = Field(
        max_length=256,
        description="Code or id of the record written (a file digest for imports).",
        schema_extra={"examples": ["25"]},
    )
    changes: str = Field(
        description="What changed, as JSON: {field: [old, new]} or counts.",
        schema_extra={"examples": ['{"value": [41.9, 42.0]}']},
    )
    reason: str = Field(
        description="Why the write was made, as the curator gave it.",
        schema_extra={"examples": ["corrected"]},
    )


class AuditEvent(AuditEventBase, table=True):
    """Every write, in order; its highest id is the data version behind ETags."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)


class AuditEventPublic(AuditEventBase):
    """One recorded write."""

    id: int = Field(
        description="Event id; increases with every write.", schema_extra={"examples": [1]}
    )
