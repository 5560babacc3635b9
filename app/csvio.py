"""CSV out: RFC 4180, UTF-8 (optional BOM for Excel), streamed in batches, formula-safe.

Each export is a plain spec (columns, statement, how to turn a batch into cells), shared by the
HTTP routes and `python -m app export`.
"""

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from fastapi.responses import StreamingResponse
from sqlalchemy import Engine, Select
from sqlmodel import Session, col, select

from app.models import City, Indicator
from app.queries import (
    ObservationFilter,
    derived_input_keys,
    indicator_select,
    observations_select,
    stream_rows,
)

# A text cell starting with one of these is run as a formula by Excel and LibreOffice.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CSV_MEDIA_TYPE = "text/csv; charset=utf-8; header=present"

Cells = Callable[[Session, Sequence[Any]], list[list[Any]]]


def cell(value: Any) -> Any:
    """One CSV cell. Only text is neutralised, so a negative number stays a number."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


@dataclass
class Export:
    filename: str
    columns: Sequence[str]
    stmt: Select[Any]
    cells: Cells | None = None  # None: each column is looked up in the row by name

    def batches(self, engine: Engine) -> Iterator[list[list[Any]]]:
        with Session(engine) as session:
            for batch in stream_rows(session, self.stmt):
                if self.cells is None:
                    yield [[row._mapping[c] for c in self.columns] for row in batch]
                else:
                    yield self.cells(session, batch)

    def chunks(self, engine: Engine, bom: bool = False) -> Iterator[str]:
        """The header, then one chunk of CRLF-terminated lines per batch of rows."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(self.columns)
        yield ("\ufeff" if bom else "") + buffer.getvalue()
        for batch in self.batches(engine):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows([cell(v) for v in row] for row in batch)
            yield buffer.getvalue()

    def response(self, engine: Engine, bom: bool) -> StreamingResponse:
        """Streams every row; the stream owns its session, which outlives the request's."""
        return StreamingResponse(
            self.chunks(engine, bom),
            media_type=CSV_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{self.filename}"'},
        )

    def write(self, engine: Engine, out: TextIO, bom: bool = False) -> None:
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
    stmt = select(*City.__table__.c).order_by(col(City.code))  # type: ignore[attr-defined]
    return Export("cities.csv", CITY_COLUMNS, stmt)


def indicators_export(dimensions: Sequence[str] = ()) -> Export:
    stmt = indicator_select(dimensions).order_by(col(Indicator.code))
    return Export("indicators.csv", INDICATOR_COLUMNS, stmt)


def _observation_cells(session: Session, batch: Sequence[Any]) -> list[list[Any]]:
    keys = derived_input_keys(session, [r.id for r in batch if r.is_derived])
    return [
        [keys.get(r.id) if c == "derived_from" else r._mapping[c] for c in OBSERVATION_COLUMNS]
        for r in batch
    ]


def observations_export(filters: ObservationFilter) -> Export:
    """`derived_from` lists the inputs as `city/indicator/period` keys, `;`-separated."""
    stmt = observations_select(filters)
    stmt = stmt.order_by(stmt.selected_columns.id)
    return Export("observations.csv", OBSERVATION_COLUMNS, stmt, _observation_cells)


def csv_responses(what: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a CSV export route."""
    return {
        200: {
            "description": f"{what}, as RFC 4180 CSV with a header row (UTF-8, CRLF).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }
