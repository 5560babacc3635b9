"""The real queries, as plain functions over a session. They return plain rows and dicts,
not ORM objects: the API validates them once, on the way out."""

import base64
import binascii
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, false, func
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from app.errors import BadRequest
from app.models import (
    CODE_PATTERN,
    City,
    ComparabilityFamily,
    Derivation,
    Dimension,
    Indicator,
    Observation,
    ObservationBase,
    ObservationRevision,
    Source,
    Unit,
)

# ---------------------------------------------------------------- pagination


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
    except (binascii.Error, UnicodeDecodeError):
        raw = None
    shape = CURSOR_INT if as_int else CURSOR_CODE
    if raw is None or encode_cursor(raw) != cursor or not shape.fullmatch(raw):
        raise BadRequest(
            f"Invalid cursor {cursor!r}: pass back the `next` value of a previous page."
        )
    return int(raw) if as_int else raw


@dataclass
class Slice:
    rows: list[Any]
    total: int
    next_cursor: str | None


def paginate(
    session: Session, stmt: Select[Any], key: Any, limit: int, cursor: str | None
) -> Slice:
    """Keyset pagination on a unique, sortable key column: cost does not grow with depth."""
    # Core execution on the session's connection: the ORM layer adds nothing to row reads.
    conn = session.connection()
    total = conn.execute(
        core_select(func.count()).select_from(stmt.order_by(None).subquery())
    ).scalar_one()
    if cursor is not None:
        after = decode_cursor(cursor, as_int=key.type.python_type is int)
        stmt = stmt.where(key > after)
    rows = list(conn.execute(stmt.order_by(key).limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]._mapping[key.key]) if more else None
    return Slice(rows=rows, total=total, next_cursor=next_cursor)


# ---------------------------------------------------------------- code checks


def check_codes(
    session: Session, model: Any, codes: Sequence[str], what: str, listing: str
) -> None:
    """Rejects filter codes that name nothing, so a typo is not mistaken for 'no data'."""
    if not codes:
        return
    table = model.__table__
    known = set(
        session.connection()
        .execute(core_select(table.c.code).where(table.c.code.in_(codes)))
        .scalars()
    )
    unknown = [c for c in codes if c not in known]
    if unknown:
        names = ", ".join(repr(c) for c in unknown)
        raise BadRequest(f"Unknown {what} {names}. List the valid codes at {listing}.")


# ---------------------------------------------------------------- observations

# The columns an observation read returns, from the live table or from the revisions.
OBSERVATION_FIELDS = ("id", *ObservationBase.model_fields, "version")


def observations_as_of(as_of: datetime) -> FromClause:
    """Each observation as its newest revision at `as_of` left it; deleted ones drop out."""
    r = ObservationRevision.__table__.c  # type: ignore[attr-defined]
    newest = (
        func.row_number()
        .over(partition_by=r.observation_id, order_by=r.version.desc())
        .label("rank")
    )
    columns: list[Any] = [r.observation_id.label("id"), *(r[f] for f in OBSERVATION_FIELDS[1:])]
    ranked = (
        core_select(*columns, r.deleted, newest).where(r.changed_at <= as_of).subquery("ranked")
    )
    return (
        core_select(*(ranked.c[f] for f in OBSERVATION_FIELDS))
        .where(ranked.c.rank == 1, ranked.c.deleted == false())
        .subquery("observation_as_of")
    )


@dataclass
class ObservationFilter:
    cities: list[str] = field(default_factory=list)
    indicators: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    year_from: int | None = None
    year_to: int | None = None
    latest: bool = False
    as_of: datetime | None = None

    def check(self, session: Session, rows: Sequence[Any] = ()) -> None:
        """422 for codes that name nothing. A code that appears in `rows` (a page this filter
        returned) plainly exists, so only the others are looked up: usually none."""
        seen = {
            f: {r._mapping[f] for r in rows}
            for f in ("city_code", "indicator_code", "dimension_code")
        }
        for model, codes, field_, what, listing in (
            (City, self.cities, "city_code", "city", "/api/v1/cities"),
            (Indicator, self.indicators, "indicator_code", "indicator", "/api/v1/indicators"),
            (Dimension, self.dimensions, "dimension_code", "dimension", "/api/v1/dimensions"),
        ):
            check_codes(session, model, [c for c in codes if c not in seen[field_]], what, listing)
        if self.year_from and self.year_to and self.year_from > self.year_to:
            raise BadRequest(f"year_from ({self.year_from}) is after year_to ({self.year_to}).")

    def table(self) -> FromClause:
        if self.as_of is None:
            return Observation.__table__  # type: ignore[attr-defined,no-any-return]
        return observations_as_of(self.as_of)

    def conditions(self, t: FromClause) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.as_of is None:
            where.append(t.c.deleted_at.is_(None))
        if self.cities:
            where.append(t.c.city_code.in_(self.cities))
        if self.indicators:
            where.append(t.c.indicator_code.in_(self.indicators))
        if self.dimensions:
            where.append(col(Indicator.dimension_code).in_(self.dimensions))
        if self.year_from is not None:
            where.append(t.c.period >= self.year_from)
        if self.year_to is not None:
            where.append(t.c.period <= self.year_to)
        return where


def observations_select(f: ObservationFilter) -> Select[Any]:
    """Observations with their unit and dimension; `latest` keeps the newest per city+indicator.

    An undated value stands as of its source, so it ranks at the source's reference year.
    The statement's `id` column (`stmt.selected_columns.id`) is the key to order and page by.
    """
    t = f.table()
    where = f.conditions(t)
    columns: list[Any] = [
        *(t.c[n] for n in OBSERVATION_FIELDS),
        Indicator.unit_code,
        Indicator.dimension_code,
    ]
    stmt: Select[Any] = (
        core_select(*columns)
        .select_from(t)
        .join(Indicator, col(Indicator.code) == t.c.indicator_code)
        .where(*where)
    )
    if f.latest:
        effective_year = func.coalesce(t.c.period, Source.reference_year)
        rank = (
            func.row_number()
            .over(
                partition_by=(t.c.city_code, t.c.indicator_code),
                order_by=(effective_year.desc(), t.c.id.desc()),
            )
            .label("rank")
        )
        ranked = (
            select(t.c.id, rank)
            .select_from(t)
            .join(Indicator, col(Indicator.code) == t.c.indicator_code)
            .join(Source, col(Source.id) == t.c.source_id)
            .where(*where)
            .subquery()
        )
        stmt = stmt.where(t.c.id.in_(select(ranked.c.id).where(ranked.c.rank == 1)))
    return stmt


def derived_inputs(session: Session, ids: Sequence[int]) -> dict[int, list[int]]:
    links: dict[int, list[int]] = {}
    if ids:
        rows = session.exec(
            select(Derivation.observation_id, Derivation.input_id)
            .where(col(Derivation.observation_id).in_(ids))
            .order_by(col(Derivation.input_id))
        )
        for obs_id, input_id in rows:
            links.setdefault(obs_id, []).append(input_id)
    return links


def observation_dicts(session: Session, rows: Sequence[Any]) -> list[dict[str, Any]]:
    inputs = derived_inputs(session, [r.id for r in rows if r.is_derived])
    keys = list(rows[0]._fields) if rows else []
    return [{**dict(zip(keys, r, strict=True)), "derived_from": inputs.get(r.id, [])} for r in rows]


def derived_input_keys(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """`city/indicator/period` keys of each derived observation's inputs, `;`-joined (for CSV)."""
    from app.writes import observation_key

    keys: dict[int, list[str]] = {}
    if ids:
        rows = session.exec(
            select(
                Derivation.observation_id,
                Observation.city_code,
                Observation.indicator_code,
                Observation.period,
            )
            .join(Observation, col(Observation.id) == Derivation.input_id)
            .where(col(Derivation.observation_id).in_(ids))
            .order_by(col(Derivation.input_id))
        )
        for obs_id, city, indicator, period in rows:
            keys.setdefault(obs_id, []).append(observation_key(city, indicator, period))
    return {obs_id: ";".join(k) for obs_id, k in keys.items()}


def stream_rows(session: Session, stmt: Select[Any], batch: int = 2000) -> Iterator[Sequence[Any]]:
    """Yields the result in batches from a server-side cursor, so memory stays flat."""
    result = session.connection().execution_options(yield_per=batch).execute(stmt)
    yield from result.partitions(batch)


# ---------------------------------------------------------------- reference data


def unit_dicts(session: Session) -> dict[str, dict[str, Any]]:
    return {u.code: u.model_dump() for u in session.exec(select(Unit))}


def family_dicts(session: Session) -> dict[str, dict[str, Any]]:
    members: dict[str, list[str]] = {}
    for code, family in session.exec(
        select(Indicator.code, Indicator.family_code)
        .where(col(Indicator.family_code).is_not(None))
        .order_by(col(Indicator.code))
    ):
        members.setdefault(str(family), []).append(code)
    return {
        f.code: {**f.model_dump(), "indicators": members.get(f.code, [])}
        for f in session.exec(select(ComparabilityFamily))
    }


def indicator_dicts(session: Session, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Indicator rows with basis, unit and family nested, as IndicatorPublic expects."""
    units, families = unit_dicts(session), family_dicts(session)
    out = []
    for row in rows:
        data = dict(row._mapping)
        data["basis"] = {k: data.pop(k) for k in ("numerator", "denominator", "scope")}
        data["unit"] = units[data["unit_code"]]
        data["family"] = families.get(data["family_code"]) if data["family_code"] else None
        out.append(data)
    return out


def indicator_select(dimension_codes: Sequence[str] = ()) -> Select[Any]:
    stmt = select(*Indicator.__table__.c)  # type: ignore[attr-defined]
    if dimension_codes:
        stmt = stmt.where(col(Indicator.dimension_code).in_(dimension_codes))
    return stmt


def dimension_coverage(session: Session, dimension_code: str) -> list[dict[str, Any]]:
    """The dimension's indicators, each with the cities that have data for it."""
    cities: dict[str, list[str]] = {}
    for indicator, city in session.exec(
        select(Observation.indicator_code, Observation.city_code)
        .join(Indicator)
        .where(Indicator.dimension_code == dimension_code, col(Observation.deleted_at).is_(None))
        .distinct()
        .order_by(col(Observation.city_code))
    ):
        cities.setdefault(indicator, []).append(city)
    indicators = session.exec(
        select(Indicator)
        .where(Indicator.dimension_code == dimension_code)
        .order_by(col(Indicator.code))
    )
    return [
        {
            "code": i.code,
            "name_zh": i.name_zh,
            "name_en": i.name_en,
            "unit_code": i.unit_code,
            "cities": cities.get(i.code, []),
        }
        for i in indicators
    ]
