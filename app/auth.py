"""API keys: created once, shown once, stored as a SHA-256 hash, compared in constant time.

Reads are public. Writes need a key with scope `write` or `admin` (which also reads the audit
log), sent as `X-API-Key: KEY` or `Authorization: Bearer KEY`; a `read` key gets a 403.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine, bindparam
from sqlmodel import Session, col, select

from app.models import ApiKey, Scope, utcnow

CAN_WRITE = frozenset({"write", "admin"})
KEY_PREFIX = "xz"


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, name: str, scope: Scope) -> str:
    """Stores a new key's hash and returns the key; it cannot be shown again."""
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with Session(engine) as session, session.begin():
        if session.exec(select(ApiKey).where(ApiKey.name == name)).first():
            raise ValueError(f"a key named {name!r} exists already")
        session.add(
            ApiKey(
                name=name, prefix=prefix, key_hash=hash_key(key), scope=scope, created_at=utcnow()
            )
        )
    return key


def revoke_key(engine: Engine, name: str) -> bool:
    with Session(engine) as session, session.begin():
        row = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        return True


def list_keys(engine: Engine) -> list[ApiKey]:
    with Session(engine) as session:
        return list(session.exec(select(ApiKey).order_by(col(ApiKey.id))))


@dataclass(frozen=True)
class Curator:
    name: str
    scope: str


LIVE_KEY = select(ApiKey.name, ApiKey.scope, ApiKey.key_hash).where(
    ApiKey.prefix == bindparam("prefix"), col(ApiKey.revoked_at).is_(None)
)


def find_curator(engine: Engine, presented: str) -> Curator | None:
    """The curator whose live key is `presented`, or None. The hash comparison is
    constant-time. Read on the read engine: checking a key takes no write lock, so it never
    waits for a writer, and a request without a valid key never takes a writer's turn."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    with engine.connect() as connection:
        row = connection.execute(LIVE_KEY, {"prefix": parts[1]}).first()
    if row is None or not hmac.compare_digest(hash_key(presented), row.key_hash):
        return None
    return Curator(name=row.name, scope=row.scope)


api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from `python -m app keys create`."
)
bearer = HTTPBearer(
    auto_error=False, description="The same API key, as `Authorization: Bearer KEY`."
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        401, detail, headers={"WWW-Authenticate": 'Bearer, ApiKey header="X-API-Key"'}
    )


def _curator(
    request: Request,
    api_key: Annotated[str | None, Security(api_key_header)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Curator:
    presented = api_key or (credentials.credentials if credentials else None)
    if not presented:
        raise _unauthorized("This write needs an API key: send X-API-Key or Authorization: Bearer.")
    curator = find_curator(request.app.state.engine, presented)
    if curator is None:
        raise _unauthorized("The API key is unknown or revoked.")
    return curator


def _needs(scopes: frozenset[str], wanted: str) -> object:
    async def check(curator: Annotated[Curator, Depends(_curator)]) -> Curator:
        if curator.scope not in scopes:
            raise HTTPException(
                403, f"Key {curator.name!r} has scope {curator.scope!r}; this needs {wanted!r}."
            )
        return curator

    return check


_writer = _needs(CAN_WRITE, "write")
_admin = _needs(frozenset({"admin"}), "admin")


WriterDep = Annotated[Curator, Depends(_writer)]
AdminDep = Annotated[Curator, Depends(_admin)]


ReasonQuery = Annotated[
    str,
    Query(
        min_length=3,
        max_length=500,
        description="Why this write is made; kept in the history and the audit log.",
        openapi_examples={"correction": {"value": "Corrected from the 2024 statistical bulletin"}},
    ),
]
