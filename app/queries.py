"""The real queries, as plain functions over a session. They return plain rows and dicts,
not ORM objects: the API validates them once, on the way out."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    FromClause,
    Select,
    bindparam,
    exists,
    false,
    func,
    true,
)
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from app.errors import BadRequest
from app.models import (
    City,
    CityIndustry,
    ComparabilityFamily,
    Derivation,
    Dimension,
    Indicator,
    Observation,
    ObservationBase,
    ObservationRevision,
    Source,
    Unit,
    observation_key,
)
from app.pagination import Slice, decode_cursor, encode_cursor


def paginate(
    session: Session, stmt: Select[Any], key: Any, limit: int, cursor: str | None
) -> Slice:
    """Keyset pagination on a unique, sortable key column: cost does not grow with depth."""
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


def check_codes(
    session: Session, model: Any, codes: Sequence[str], what: str, listing: str
) -> None:
    """Rejects filter codes that name nothing, so a typo is not mistaken for 'no data'."""
    if not codes:
        return
    code = model.__table__.c.code
    known = set(session.connection().execute(core_select(code).where(code.in_(codes))).scalars())
    unknown = [c for c in codes if c not in known]
    if unknown:
        names = ", ".join(repr(c) for c in unknown)
        raise BadRequest(f"Unknown {what} {names}. List the valid codes at {listing}.")


# ---------------------------------------------------------------- observations

# The columns an observation read returns, from the live table or from the revisions.
OBSERVATION_FIELDS = ("id", *ObservationBase.model_fields, "version")


def observations_as_of(as_of: ColumnElement[datetime]) -> FromClause:
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

    def check(self, session: Session, rows: Sequence[dict[str, Any]] = ()) -> None:
        """422 for codes that name nothing, and for a year range that is empty by its bounds.
        A code in `rows` (observations this filter returned) plainly exists: only the others
        are looked up, usually none."""
        for model, codes, column, what, listing in (
            (City, self.cities, "city_code", "city", "/api/v1/cities"),
            (Indicator, self.indicators, "indicator_code", "indicator", "/api/v1/indicators"),
            (Dimension, self.dimensions, "dimension_code", "dimension", "/api/v1/dimensions"),
        ):
            seen = {r[column] for r in rows}
            check_codes(session, model, [c for c in codes if c not in seen], what, listing)
        if self.year_from and self.year_to and self.year_from > self.year_to:
            raise BadRequest(f"year_from ({self.year_from}) is after year_to ({self.year_to}).")

    def table(self) -> FromClause:
        if self.as_of is None:
            return Observation.__table__  # type: ignore[attr-defined,no-any-return]
        return observations_as_of(bindparam("as_of", self.as_of, type_=DateTime))

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
        period: ColumnElement[Any] = t.c.period
        if len(self.cities) == 1 and len(self.indicators) == 1:
            # One city and one indicator are a few dozen rows, already in id order in
            # ix_observation_indicator_city. Searched by period, SQLite would walk
            # uq_observation_key instead and sort by id (an expression is never searched).
            period = period + 0
        if self.year_from is not None:
            where.append(period >= self.year_from)
        if self.year_to is not None:
            where.append(period <= self.year_to)
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


def observation_page_select(f: ObservationFilter, after: int | None, limit: int) -> Select[Any]:
    """A page of observations: `limit` rows in id order, after the id `after`."""
    stmt = observations_select(f)
    key = stmt.selected_columns.id
    if after is not None:
        stmt = stmt.where(key > after)
    return stmt.order_by(key).limit(limit)


def observation_count_select(f: ObservationFilter) -> Select[Any]:
    return core_select(func.count()).select_from(observations_select(f).subquery())


def observation_page(
    session: Session, f: ObservationFilter, limit: int, cursor: str | None
) -> Slice:
    """One page of observations as public dicts (with `derived_from`), keyset-paged by id.
    Unknown filter codes are a 422. The count is skipped when the first page is the whole
    result."""
    after = None if cursor is None else int(decode_cursor(cursor, as_int=True))
    conn = session.connection()
    page = conn.execute(observation_page_select(f, after, limit + 1)).mappings().all()
    rows = [dict(r) for r in page]
    more = len(rows) > limit
    rows = with_derived_from(session, rows[:limit])
    f.check(session, rows)
    if after is None and not more:
        total = len(rows)
    else:
        total = conn.execute(observation_count_select(f)).scalar_one()
    next_cursor = encode_cursor(rows[-1]["id"]) if more else None
    return Slice(rows=rows, total=total, next_cursor=next_cursor)


def derivation_inputs(session: Session, derived: Sequence[int]) -> dict[int, list[int]]:
    """The ids of each derived observation's inputs, in order."""
    inputs: dict[int, list[int]] = {}
    if derived:
        d = Derivation.__table__.c  # type: ignore[attr-defined]
        stmt = (
            core_select(d.observation_id, d.input_id)
            .where(d.observation_id.in_(derived))
            .order_by(d.input_id)
        )
        for obs_id, input_id in session.connection().execute(stmt):
            inputs.setdefault(obs_id, []).append(input_id)
    return inputs


def with_derived_from(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds `derived_from`, the ids of each derived observation's inputs, to observation dicts."""
    inputs = derivation_inputs(session, [r["id"] for r in rows if r["is_derived"]])
    for r in rows:
        r["derived_from"] = inputs.get(r["id"], [])
    return rows


def observation_dicts(session: Session, rows: Sequence[Any]) -> list[dict[str, Any]]:
    return with_derived_from(session, [dict(r._mapping) for r in rows])


def derived_input_keys(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """`city/indicator/period` keys of each derived observation's inputs, `;`-joined (for CSV)."""
    keys: dict[int, list[str]] = {}
    if ids:
        d = Derivation.__table__.c  # type: ignore[attr-defined]
        o = Observation.__table__.c  # type: ignore[attr-defined]
        stmt = (
            core_select(d.observation_id, o.city_code, o.indicator_code, o.period)
            .join_from(Derivation, Observation, o.id == d.input_id)
            .where(d.observation_id.in_(ids))
            .order_by(d.input_id)
        )
        for obs_id, city, indicator, period in conn.execute(stmt):
            keys.setdefault(obs_id, []).append(observation_key(city, indicator, period))
    return {obs_id: ";".join(k) for obs_id, k in keys.items()}


def city_detail(session: Session, city: City) -> dict[str, Any]:
    """The city, its latest values under every dimension, and its industries."""
    conn = session.connection()
    latest_stmt = observations_select(ObservationFilter(cities=[city.code], latest=True))
    latest = with_derived_from(
        session, [dict(r._mapping) for r in conn.execute(latest_stmt.order_by("indicator_code"))]
    )
    dimension = Dimension.__table__.c  # type: ignore[attr-defined]
    industry = CityIndustry.__table__.c  # type: ignore[attr-defined]
    dimensions = conn.execute(core_select(*dimension).order_by(dimension.position))
    industries = conn.execute(
        core_select(*industry).where(industry.city_code == city.code).order_by(industry.id)
    )
    return {
        **city.model_dump(),
        "dimensions": [
            {**d._mapping, "latest": [o for o in latest if o["dimension_code"] == d.code]}
            for d in dimensions
        ],
        "industries": [dict(i._mapping) for i in industries],
    }


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


def coverage_select(dimension_code: str) -> Select[str, str]:
    """(indicator, city) for each of the dimension's indicators and each city with live data
    for it, by city. One indexed probe per pair, stopping at the first live row, rather than
    every observation of the dimension made distinct (at 1M, 250,000 rows: about 1 s)."""
    live = exists().where(
        col(Observation.indicator_code) == col(Indicator.code),
        col(Observation.city_code) == col(City.code),
        col(Observation.deleted_at).is_(None),
    )
    return (
        core_select(col(Indicator.code), col(City.code))
        .join(City, true())  # every pair, each probed by `live`
        .where(col(Indicator.dimension_code) == dimension_code, live)
        .order_by(col(City.code))
    )


def dimension_coverage(session: Session, dimension_code: str) -> list[dict[str, Any]]:
    """The dimension's indicators, each with the cities that have data for it."""
    cities: dict[str, list[str]] = {}
    for indicator, city in session.execute(coverage_select(dimension_code)):
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
