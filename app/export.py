"""CSV out: RFC 4180, UTF-8 (optional BOM for Excel), formula-safe, streamed in batches from
one cursor through one `csv.writer`.

Each export is a plain spec (columns, statement, what Python adds to a batch), shared by the
HTTP routes and `python -m app export`.
"""

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from fastapi.responses import StreamingResponse
from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Result,
    Select,
    String,
    case,
    func,
    literal,
    null,
)
from sqlalchemy import select as core_select
from sqlmodel import select

from app.models import City
from app.queries import ObservationFilter, derived_input_keys, indicator_select, observations_select

# A text cell starting with one of these is run as a formula by Excel and LibreOffice.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CSV_MEDIA_TYPE = "text/csv; charset=utf-8; header=present"
BATCH_ROWS = 10_000


def cell(value: Any) -> Any:
    """One CSV cell, as the exports write it: text that a spreadsheet would run as a formula
    gets a leading `'`; a flag is `true`/`false`; numbers are left alone (a negative number
    stays a number); null is empty. The exports do the same in SQL (csv_safe)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def csv_safe(column: Any) -> Any:
    """cell() as an SQL expression, so rows go from the cursor to csv.writer untouched."""
    kind = getattr(column.type, "impl_instance", column.type)  # SQLModel's AutoString
    if isinstance(kind, Boolean):
        return case((column, literal("true")), (column.is_not(None), literal("false")))
    if isinstance(kind, String):
        formula = func.substr(column, 1, 1).in_(FORMULA_TRIGGERS)
        return case((formula, literal("'") + column), else_=column)
    return column


# Fills the cells computed in Python (derived_from) in a batch of rows; returns the batch.
Extra = Callable[[Connection, Sequence[Any]], Sequence[Any]]


@dataclass
class Export:
    filename: str
    columns: Sequence[str]
    stmt: Select[Any]
    order_by: Sequence[str]
    extra: Extra | None = None
    batch_rows: int = BATCH_ROWS

    def select(self) -> Select[Any]:
        """The statement's rows as CSV cells in `columns` order (others null, for `extra`)."""
        rows = self.stmt.subquery("export")
        cells = [
            csv_safe(rows.c[c]).label(c) if c in rows.c else null().label(c) for c in self.columns
        ]
        return core_select(*cells).order_by(*(rows.c[c] for c in self.order_by))

    def chunks(self, engine: Engine, bom: bool = False) -> Iterator[bytes]:
        """UTF-8: the header, then one chunk of CRLF-terminated lines per `batch_rows` rows,
        streamed from the cursor (server-side on PostgreSQL), so memory stays flat. One
        transaction: on the app's snapshot engine, every batch sees the same data. The query
        runs before this returns, so a database that is down fails it before any byte is sent."""
        conn = engine.connect()
        try:
            options = {"stream_results": True, "max_row_buffer": self.batch_rows}
            result = conn.execution_options(**options).execute(self.select())
        except BaseException:
            conn.close()
            raise
        return self.lines(conn, result, bom)

    def lines(self, conn: Connection, result: Result[Any], bom: bool) -> Iterator[bytes]:
        try:
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(self.columns)
            yield (("\ufeff" if bom else "") + out.getvalue()).encode()
            for batch in result.partitions(self.batch_rows):
                out.seek(0)
                out.truncate()
                writer.writerows(batch if self.extra is None else self.extra(conn, batch))
                yield out.getvalue().encode()
        finally:
            conn.close()

    def response(self, engine: Engine, bom: bool) -> StreamingResponse:
        """Streams every row; the stream owns its connection, which outlives the request's."""
        return StreamingResponse(
            self.chunks(engine, bom),
            media_type=CSV_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{self.filename}"'},
        )

    def write(self, engine: Engine, out: BinaryIO, bom: bool = False) -> None:
        for chunk in self.chunks(engine, bom):
            out.write(chunk)


CITY_COLUMNS = ["code", "name_zh", "name_en", "province_zh", "province_en", "admin_level", "notes"]
INDICATOR_COLUMNS = [
    "code",
    "name_zh",
    "name_en",
    "dimension_code",
    "unit_code",
    "family_code",
    "numerator",
    "denominator",
    "scope",
    "definition",
    "dimension_rationale",
]
OBSERVATION_COLUMNS = [
    "id",
    "city_code",
    "indicator_code",
    "dimension_code",
    "unit_code",
    "period",
    "value",
    "value_text",
    "qualifier",
    "is_derived",
    "formula",
    "derived_from",
    "source_id",
    "quote",
    "note",
]


def cities_export() -> Export:
    stmt = select(*City.__table__.c)  # type: ignore[attr-defined]
    return Export("cities.csv", CITY_COLUMNS, stmt, order_by=["code"])


def indicators_export(dimensions: Sequence[str] = ()) -> Export:
    return Export(
        "indicators.csv", INDICATOR_COLUMNS, indicator_select(dimensions), order_by=["code"]
    )


ID, IS_DERIVED, DERIVED_FROM = (
    OBSERVATION_COLUMNS.index(c) for c in ("id", "is_derived", "derived_from")
)


def with_input_keys(conn: Connection, batch: Sequence[Any]) -> Sequence[Any]:
    """Names the inputs of the batch's derived rows by key; other rows pass through as they are."""
    keys = derived_input_keys(conn, [r[ID] for r in batch if r[IS_DERIVED] == "true"])
    if not keys:
        return batch
    return [
        (*r[:DERIVED_FROM], keys[r[ID]], *r[DERIVED_FROM + 1 :]) if r[ID] in keys else r
        for r in batch
    ]


def observations_export(filters: ObservationFilter) -> Export:
    """`derived_from` lists the inputs as `city/indicator/period` keys, `;`-separated."""
    return Export(
        "observations.csv",
        OBSERVATION_COLUMNS,
        observations_select(filters),
        ["id"],
        with_input_keys,
    )


def csv_responses(what: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a CSV export route."""
    return {
        200: {
            "description": f"{what}, as RFC 4180 CSV with a header row (UTF-8, CRLF).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }
