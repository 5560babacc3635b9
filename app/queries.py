"""The real queries, as plain functions over a session. They return plain rows and dicts,
not ORM objects: the API validates them once, on the way out."""

import base64
import re
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    FromClause,
    Integer,
    LargeBinary,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    true,
    type_coerce,
)
from sqlalchemy import select as core_select
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import custom_op
from sqlmodel import Session, SQLModel, col, select

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
from app.prepared import Reader, one_of, values_of

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
    rows: list[Any]
    total: int
    next_cursor: str | None
    items_json: bytes | None = None  # the rows as one JSON array, when the database wrote them


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


def _known_codes_select(table: str, count: int) -> Select[Any]:
    t = SQLModel.metadata.tables[table]
    return core_select(t.c.code).where(one_of(t.c.code, "code", [None] * count))


def check_codes(reader: Reader, model: Any, codes: Sequence[str], what: str, listing: str) -> None:
    """Rejects filter codes that name nothing, so a typo is not mistaken for 'no data'."""
    if not codes:
        return
    params = values_of("code", codes)
    known = {
        r[0] for r in reader.rows(_known_codes_select, (model.__tablename__, len(codes)), params)
    }
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


FilterShape = tuple[int, int, int, bool, bool, bool, bool]


@dataclass
class ObservationFilter:
    cities: list[str] = field(default_factory=list)
    indicators: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    year_from: int | None = None
    year_to: int | None = None
    latest: bool = False
    as_of: datetime | None = None

    def shape(self) -> FilterShape:
        """What decides the SQL text; the values go in as parameters (see `params`)."""
        return (
            len(self.cities),
            len(self.indicators),
            len(self.dimensions),
            self.year_from is not None,
            self.year_to is not None,
            self.latest,
            self.as_of is not None,
        )

    @classmethod
    def of_shape(cls, shape: FilterShape) -> "ObservationFilter":
        """A filter with placeholder values, to build the statement for a shape."""
        cities, indicators, dimensions, year_from, year_to, latest, as_of = shape
        return cls(
            cities=[""] * cities,
            indicators=[""] * indicators,
            dimensions=[""] * dimensions,
            year_from=0 if year_from else None,
            year_to=0 if year_to else None,
            latest=latest,
            as_of=datetime.min if as_of else None,
        )

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"year_from": self.year_from, "year_to": self.year_to}
        if self.as_of is not None:
            params["as_of"] = self.as_of
        for name, codes in (
            ("city", self.cities),
            ("indicator", self.indicators),
            ("dimension", self.dimensions),
        ):
            params.update(values_of(name, codes))
        return params

    def check(self, reader: Reader, rows: Sequence[Sequence[Any]] = ()) -> None:
        """422 for codes that name nothing. A code that appears in `rows` (a page this filter
        returned, each row starting id, city, indicator, dimension) plainly exists, so only
        the others are looked up: usually none."""
        for model, codes, at, what, listing in (
            (City, self.cities, 1, "city", "/api/v1/cities"),
            (Indicator, self.indicators, 2, "indicator", "/api/v1/indicators"),
            (Dimension, self.dimensions, 3, "dimension", "/api/v1/dimensions"),
        ):
            seen = {r[at] for r in rows}
            check_codes(reader, model, [c for c in codes if c not in seen], what, listing)
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
            where.append(one_of(t.c.city_code, "city", self.cities))
        if self.indicators:
            where.append(one_of(t.c.indicator_code, "indicator", self.indicators))
        if self.dimensions:
            where.append(one_of(col(Indicator.dimension_code), "dimension", self.dimensions))
        period: ColumnElement[Any] = t.c.period
        if len(self.cities) == 1 and len(self.indicators) == 1:
            period = not_searched(period)
        if self.year_from is not None:
            where.append(period >= bindparam("year_from", self.year_from))
        if self.year_to is not None:
            where.append(period <= bindparam("year_to", self.year_to))
        return where


def not_searched(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """`+column`: the same value, which SQLite's planner will not search an index by.

    One city and one indicator are a few dozen rows. With a year range SQLite searched
    uq_observation_key by city, indicator and period, then sorted the rows by id in a temporary
    B-tree; given only the two codes, it walks ix_observation_indicator_city, whose entries
    are already in id order, and stops after the page (16% fewer instructions for the page's
    statement at 1M, docs/performance.md)."""
    return UnaryExpression(column, operator=custom_op("+"), type_=column.type)


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


def observation_page_select(shape: FilterShape, after: bool) -> Select[Any]:
    stmt = observations_select(ObservationFilter.of_shape(shape))
    key = stmt.selected_columns.id
    if after:
        stmt = stmt.where(key > bindparam("after", type_=Integer))
    return stmt.order_by(key).limit(bindparam("limit", type_=Integer))


def observation_count_select(shape: FilterShape) -> Select[Any]:
    stmt = observations_select(ObservationFilter.of_shape(shape))
    return core_select(func.count()).select_from(stmt.subquery())


def _derivations_select(count: int) -> Select[Any]:
    d = Derivation.__table__.c  # type: ignore[attr-defined]
    return (
        core_select(d.observation_id, d.input_id)
        .where(one_of(d.observation_id, "id", [None] * count, Integer))
        .order_by(d.input_id)
    )


# Dialects whose database writes each row of an observation page as the JSON object orjson
# writes for its dict: SQLite's json_object escapes text as orjson does, and floats are
# printed as repr() does or the page is read as dicts. That saves 7% of an uncached page's
# instructions, the 50 dicts and a second pass over their text (docs/performance.md).
# PostgreSQL's json_build_object spaces its output otherwise, so there the page stays dicts.
JSON_DIALECTS = ("sqlite",)


@cache
def sqlite_prints_floats_as_assumed() -> bool:
    """Whether this process's SQLite prints floats as float_as_repr and JSON_DIALECTS assume:
    a float's text either fails to read back or is repr()'s (SQLite 3.40 prints up to 15
    digits; one printing 17 would read back as 0.10000000000000001), json_object prints a
    float as CAST does (and exists), and it writes a flag_text(..., func.json) as a JSON
    boolean. Asked once, of an in-memory database: the library is the same for every
    connection. If not, the exports and pages are written by Python."""
    try:
        with closing(sqlite3.connect(":memory:")) as connection:
            for value in (0.1, 2.0, 1 / 3, 0.30000000000000004, 77.55, 123456.789):
                text, json_text, reads_back = connection.execute(
                    "SELECT CAST(?1 AS TEXT), json_object('v', ?1), "
                    "CAST(CAST(?1 AS TEXT) AS REAL) = ?1",
                    (value,),
                ).fetchone()
                if (reads_back and text != repr(value)) or json_text != f'{{"v":{text}}}':
                    return False
            flag = flag_text(literal_column("flag"), func.json)
            sql = f"SELECT json_object('v', {flag.compile()}) FROM (SELECT ?1 AS flag)"
            for stored, written in ((1, "true"), (0, "false"), (None, "null")):
                if connection.execute(sql, (stored,)).fetchone() != (f'{{"v":{written}}}',):
                    return False  # json()'s result made once per statement lost its subtype
    except sqlite3.Error:
        return False
    return True


def prints_floats_as_assumed(dialect: str) -> bool:
    """Whether the database may write CSV lines and JSON pages (PostgreSQL prints the shortest
    digits that read back: the engine sets extra_float_digits, see make_engine)."""
    return dialect != "sqlite" or sqlite_prints_floats_as_assumed()


def database_writes(dialect: str, dialects: tuple[str, ...]) -> bool:
    """Whether the database writes an output itself: one of the `dialects` it can write in,
    printing floats as assumed."""
    return dialect in dialects and prints_floats_as_assumed(dialect)


def flag_text(column: Any, wrap: Callable[[Any], Any] = lambda text: text) -> Any:
    """A boolean column as the text `true` or `false` (null when it is), each `wrap`ped:
    `func.json` makes them JSON values, each made once per statement (a constant)."""
    return case(
        (column, wrap(literal_column("'true'"))),
        (column.is_not(None), wrap(literal_column("'false'"))),
    )


def float_as_repr(column: Any, dialect: str) -> tuple[Any, ColumnElement[bool]]:
    """The text the database prints for a float column, and whether it is repr()'s.

    Zero, and between 1e-4 and 1e15, Python and both databases print without an exponent,
    and if the digits a database prints read back as the same float, they are the shortest
    that do, which are repr()'s (SQLite prints up to 15; PostgreSQL the shortest, but a whole
    number without its `.0`). On SQLite four_places() answers first for most floats, without
    printing them. Null when the column is."""
    text: Any = cast(column, Text)
    reads_back: Any = cast(cast(column, Text), Float) == column
    if dialect == "postgresql":
        text = text + case((column == func.trunc(column), literal(".0")), else_=literal(""))
    else:
        reads_back = or_(four_places(column), reads_back)
    printable = or_(
        column == literal_column("0.0"),
        and_(
            func.abs(column) >= literal_column("0.0001"),
            func.abs(column) < literal_column("1e15"),
            reads_back,
        ),
    )
    return text, printable


def four_places(column: Any) -> ColumnElement[bool]:
    """Whether a float is the nearest to a decimal of at most four places under 1e11, so of at
    most 15 digits, which therefore read back: arithmetic only, where printing the float and
    reading it back costs SQLite about ten times as much."""
    places: Any = literal_column("10000.0")
    return and_(
        func.abs(column) < literal_column("1e11"), func.round(column * places) / places == column
    )


def observation_json_select(shape: FilterShape, after: bool) -> Select[Any]:
    """observation_page_select's page as rows of (id, city, indicator, dimension, is_derived,
    whether every float printed as repr() does, the row's JSON object as bytes ending with
    `"derived_from":[]}`): what observation_page needs beside the JSON, for check() and
    derived_from, and to read dicts instead when a float is not printable."""
    stmt = observation_page_select(shape, after)
    c = stmt.selected_columns
    members: list[Any] = []
    printed: list[Any] = []
    for column in c:
        value: Any = column
        if isinstance(column.type, Boolean):
            value = flag_text(column, func.json)
        elif isinstance(column.type, Float):  # json_object prints it as CAST(... AS TEXT)
            _, printable = float_as_repr(column, "sqlite")
            printed.append(or_(column.is_(None), printable))
        members += [literal_column(f"'{column.key}'"), value]
    members += [literal_column("'derived_from'"), func.json(literal_column("'[]'"))]
    return stmt.with_only_columns(
        c.id,
        c.city_code,
        c.indicator_code,
        c.dimension_code,
        # The two flags are only tested for truth, so they are read as SQLite's 0 and 1: as
        # Booleans, each row would be copied to make them bools (5% of an uncached page).
        type_coerce(c.is_derived, Integer).label("is_derived"),
        # In a CASE, SQLite stops at a float's first test passed (four_places, most often);
        # as a plain column it would evaluate every test of every float.
        type_coerce(case((and_(true(), *printed), true()), else_=false()), Integer).label(
            "printed"
        ),
        cast(func.json_object(*members), LargeBinary),
    )


def observation_page(
    reader: Reader,
    f: ObservationFilter,
    limit: int,
    cursor: str | None,
    by_database: bool | None = None,
) -> Slice:
    """One page of observations (with `derived_from`), keyset-paged by id: as one JSON array
    the database wrote (`items_json`) where it can (`by_database`, default: JSON_DIALECTS),
    else as public dicts.

    The count is skipped when the first page is the whole result. Unknown filter codes are
    a 422, looked up only when the page does not already show them to exist."""
    shape = f.shape()
    params = f.params()
    after = None if cursor is None else decode_cursor(cursor, as_int=True)
    page = {**params, "after": after, "limit": limit + 1}
    key = (shape, after is not None)
    if by_database is None:
        by_database = database_writes(reader.dialect.name, JSON_DIALECTS)
    lines = reader.rows(observation_json_select, key, page) if by_database else None
    if lines is not None and not all(line[5] for line in lines[:limit]):
        lines = None  # a float only Python prints as repr() (the row past the page is not shown)
    rows: list[Any] = (
        lines if lines is not None else reader.dicts(observation_page_select, key, page)
    )
    more = len(rows) > limit
    rows = rows[:limit]
    if after is None and not more:
        total = len(rows)
    else:
        total = reader.rows(observation_count_select, (shape,), params)[0][0]
    if lines is None:
        f.check(
            reader,
            [(r["id"], r["city_code"], r["indicator_code"], r["dimension_code"]) for r in rows],
        )
        with_derived_from(reader, rows)
        last = rows[-1]["id"] if rows else None
        items_json = None
    else:
        f.check(reader, rows)
        inputs = derivation_inputs(reader, [r[0] for r in rows if r[4]])
        objects = (
            obj
            if not derived
            else obj.removesuffix(b"[]}") + orjson.dumps(inputs.get(id_, [])) + b"}"
            for id_, _, _, _, derived, _, obj in rows
        )
        items_json = b"[" + b",".join(objects) + b"]"
        last = rows[-1][0] if rows else None
        rows = []
    return Slice(
        rows=rows,
        total=total,
        next_cursor=encode_cursor(last) if more else None,
        items_json=items_json,
    )


def derivation_inputs(reader: Reader, derived: Sequence[int]) -> dict[int, list[int]]:
    """The ids of each derived observation's inputs, in order."""
    inputs: dict[int, list[int]] = {}
    if derived:
        ids = values_of("id", derived)
        for obs_id, input_id in reader.rows(_derivations_select, (len(derived),), ids):
            inputs.setdefault(obs_id, []).append(input_id)
    return inputs


def with_derived_from(reader: Reader, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds `derived_from`, the ids of each derived observation's inputs, to observation dicts."""
    inputs = derivation_inputs(reader, [r["id"] for r in rows if r["is_derived"]])
    for r in rows:
        r["derived_from"] = inputs.get(r["id"], [])
    return rows


def observation_dicts(session: Session, rows: Sequence[Any]) -> list[dict[str, Any]]:
    return with_derived_from(Reader.of(session), [dict(r._mapping) for r in rows])


def _derivation_keys_select(count: int) -> Select[Any]:
    d = Derivation.__table__.c  # type: ignore[attr-defined]
    o = Observation.__table__.c  # type: ignore[attr-defined]
    return (
        core_select(d.observation_id, o.city_code, o.indicator_code, o.period)
        .join_from(Derivation, Observation, o.id == d.input_id)
        .where(one_of(d.observation_id, "id", [None] * count, Integer))
        .order_by(d.input_id)
    )


def derived_input_keys(reader: Reader, ids: Sequence[int]) -> dict[int, str]:
    """`city/indicator/period` keys of each derived observation's inputs, `;`-joined (for CSV)."""
    from app.writes import observation_key

    keys: dict[int, list[str]] = {}
    if ids:
        params = values_of("id", ids)
        for obs_id, city, indicator, period in reader.rows(
            _derivation_keys_select, (len(ids),), params
        ):
            keys.setdefault(obs_id, []).append(observation_key(city, indicator, period))
    return {obs_id: ";".join(k) for obs_id, k in keys.items()}


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
