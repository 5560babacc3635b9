"""The one list envelope, its query parameters, and RFC 8288 Link headers."""

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi import Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.errors import BadRequest
from app.models import CODE_PATTERN


def encode_cursor(key: object) -> str:
    return base64.urlsafe_b64encode(str(key).encode()).decode().rstrip("=")


CURSOR_INT = re.compile(r"[1-9][0-9]{0,17}")  # ids fit a signed 64-bit integer
CURSOR_CODE = re.compile(CODE_PATTERN)


def decode_cursor(cursor: str, as_int: bool) -> str | int:
    """Only cursors this API made are accepted: they must re-encode to themselves."""
    try:
        raw = base64.b64decode(
            cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True
        ).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 inside
        raw = None
    shape = CURSOR_INT if as_int else CURSOR_CODE
    if raw is None or encode_cursor(raw) != cursor or not shape.fullmatch(raw):
        raise BadRequest(
            f"Invalid cursor {cursor!r}: pass back the `next` value of a previous page."
        )
    return int(raw) if as_int else raw


@dataclass
class Slice:
    """One page of a collection as a query returns it: rows, the total, the next cursor."""

    rows: list[Any]
    total: int
    next_cursor: str | None


DEFAULT_LIMIT = 50
MAX_LIMIT = 500

LimitQuery = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_LIMIT,
        description=f"Items per page: default {DEFAULT_LIMIT}, at most {MAX_LIMIT}.",
        openapi_examples={"small page": {"value": 10}, "largest page": {"value": MAX_LIMIT}},
    ),
]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern="^[A-Za-z0-9_-]+$",  # unpadded base64url (encode_cursor)
        description="Opaque cursor: the `next` value of the previous page (e.g. `MTA`). "
        "Omit it for the first page.",
    ),
]
BomQuery = Annotated[
    bool,
    Query(
        description="Start the file with a UTF-8 byte-order mark, so Excel reads Chinese text.",
        openapi_examples={"for Excel": {"value": True}, "plain UTF-8": {"value": False}},
    ),
]


T = TypeVar("T")


class ListPage(BaseModel, Generic[T]):
    """Every collection comes in this envelope."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "A page of a collection: items, total, limit, next cursor."
        }
    )

    items: list[T] = Field(description="This page's items, in the collection's order.")
    total: int = Field(description="Rows matching the filters, across all pages.", examples=[30])
    limit: int = Field(description="The page size used.", examples=[DEFAULT_LIMIT])
    next: str | None = Field(
        description="Cursor for the next page; null on the last page.", examples=["MjU"]
    )
    next_url: str | None = Field(
        description="The full URL of the next page (also in the Link header); null on the last page."
    )


def links(request: Request, page: Slice) -> tuple[str, str | None]:
    """The RFC 8288 Link header (`rel="first"`, and `rel="next"` unless last) and the next URL:
    the query as sent, without `cursor`, then the next cursor."""
    url = request.url
    base = f"{url.scheme}://{url.netloc}{url.path}"
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    first = f"{base}?{urlencode(kept)}" if kept else base
    header = [f'<{first}>; rel="first"']
    next_url = None
    if page.next_cursor is not None:
        next_url = f"{base}?{urlencode([*kept, ('cursor', page.next_cursor)])}"
        header.append(f'<{next_url}>; rel="next"')
    return ", ".join(header), next_url


def page_of(
    request: Request, response: Response, page: Slice, limit: int, items: list[Any] | None = None
) -> ListPage[Any]:
    """Wraps a slice in the envelope (its rows, or `items` made of them) and sets the Link
    header; the route's return type validates and serialises it."""
    response.headers["Link"], next_url = links(request, page)
    return ListPage[Any](
        items=page.rows if items is None else items,
        total=page.total,
        limit=limit,
        next=page.next_cursor,
        next_url=next_url,
    )


MAX_CODES = 100
VALID_CODE = re.compile(CODE_PATTERN)
_CODE = CODE_PATTERN.strip("^$")
# One value of a codes filter, as split_codes reads it: codes between commas, spaces around
# them and empty ones allowed (the schema says so, so that no well-formed filter is a 422).
CODES_PATTERN = f"^ *(?:{_CODE})? *(?:, *(?:{_CODE})? *)*$"
# Checked by split_codes, whose message is clearer than a regex's.
Codes = list[Annotated[str, WithJsonSchema({"type": "string", "pattern": CODES_PATTERN})]]


def codes_query(what: str, *examples: str) -> Any:
    """A filter taking several codes: comma-separated, or the parameter repeated."""
    return Query(
        max_length=MAX_CODES,
        description=f"Only these {what}: comma-separated codes, or the parameter repeated.",
        openapi_examples={e: {"value": [e]} for e in examples},
    )


def split_codes(values: Sequence[str] | str | None) -> list[str]:
    """`['ningbo, shenzhen', 'hefei']` -> ['ningbo', 'shenzhen', 'hefei'] (order kept, spaces,
    empty codes and repeats dropped); more than MAX_CODES codes is a 422."""
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    codes = list(dict.fromkeys(c.strip(" ") for v in values for c in v.split(",") if c.strip(" ")))
    if len(codes) > MAX_CODES:
        raise BadRequest(f"At most {MAX_CODES} codes per filter; {len(codes)} were given.")
    malformed = [c for c in codes if not VALID_CODE.fullmatch(c)]
    if malformed:  # no such code can exist; never sent to the database (NUL, quotes, ...)
        names = ", ".join(repr(c[:70]) for c in malformed[:5])
        raise BadRequest(f"Malformed code {names}: codes are lowercase letters, digits and _.")
    return codes
