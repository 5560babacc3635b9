"""CSV out: RFC 4180, UTF-8 (optional BOM for Excel), streamed in batches, formula-safe.
CSV in: the same columns, each row validated like an API write.

Each export is a plain spec (columns, statement, how to turn a batch into cells), shared by the
HTTP routes and `python -m app export`.
"""

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, TextIO

from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Boolean, Engine, Select, String, case, func, literal, null
from sqlalchemy import select as core_select
from sqlmodel import select
from starlette.exceptions import HTTPException

from app.db import reading
from app.errors import FieldError
from app.models import City, ObservationBase, check_derivation
from app.prepared import Prepared, Reader
from app.queries import (
    ObservationFilter,
    derived_input_keys,
    indicator_select,
    observations_select,
)

# A text cell starting with one of these is run as a formula by Excel and LibreOffice.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CSV_MEDIA_TYPE = "text/csv; charset=utf-8; header=present"


def cell(value: Any) -> Any:
    """One CSV cell, as the exports write it: text that a spreadsheet would run as a formula
    gets a leading `'`; a flag is `true`/`false`; numbers are left alone (a negative number
    stays a number); null is empty. Exports do the same in SQL (csv_safe)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def csv_safe(column: Any) -> Any:
    """cell() as an SQL expression, so rows go from the cursor to the csv writer untouched."""
    kind = getattr(column.type, "impl_instance", column.type)  # SQLModel's AutoString wraps String
    if isinstance(kind, Boolean):
        return case((column.is_(None), null()), (column, literal("true")), else_=literal("false"))
    if isinstance(kind, String):
        formula = func.substr(column, 1, 1).in_(FORMULA_TRIGGERS)
        return case((formula, literal("'") + column), else_=column)
    return column


BATCH_ROWS = 10_000


@dataclass
class Export:
    filename: str
    columns: Sequence[str]
    stmt: Select[Any]
    order_by: Sequence[str] = ()
    # Fills the cells computed in Python (derived_from); returns the batch's rows.
    extra: Callable[[Reader, Sequence[Any]], Sequence[Any]] | None = None
    batch_rows: int = BATCH_ROWS

    def select(self) -> Select[Any]:
        """The statement's rows as CSV cells in `columns` order (others, null until `extra`)."""
        rows = self.stmt.subquery("export")
        cells = [
            csv_safe(rows.c[c]).label(c) if c in rows.c else null().label(c) for c in self.columns
        ]
        return core_select(*cells).order_by(*(rows.c[c] for c in self.order_by))

    def batches(self, engine: Engine) -> Iterator[Sequence[Any]]:
        """Rows straight from the driver's cursor, BATCH_ROWS at a time: memory stays flat."""
        statement = Prepared.compile(self.select(), engine.dialect)  # values bound inside
        with reading(engine) as reader, closing(reader.stream_cursor()) as stream:
            # `extra` queries use the reader's own cursor, between batches of this one
            for batch in statement.batches(stream, {}, self.batch_rows):
                yield batch if self.extra is None else self.extra(reader, batch)

    def chunks(self, engine: Engine, bom: bool = False) -> Iterator[str]:
        """The header, then one chunk of CRLF-terminated lines per batch of rows."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(self.columns)
        yield ("\ufeff" if bom else "") + buffer.getvalue()
        for batch in self.batches(engine):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(batch)
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
    stmt = select(*City.__table__.c)  # type: ignore[attr-defined]
    return Export("cities.csv", CITY_COLUMNS, stmt, order_by=["code"])


def indicators_export(dimensions: Sequence[str] = ()) -> Export:
    return Export(
        "indicators.csv", INDICATOR_COLUMNS, indicator_select(dimensions), order_by=["code"]
    )


ID, IS_DERIVED, DERIVED_FROM = (
    OBSERVATION_COLUMNS.index(c) for c in ("id", "is_derived", "derived_from")
)


def _derived_from(reader: Reader, batch: Sequence[Any]) -> Sequence[Any]:
    """Names the inputs of the batch's derived rows by key; other rows pass through as they are."""
    keys = derived_input_keys(reader, [r[ID] for r in batch if r[IS_DERIVED] == "true"])
    if not keys:
        return batch
    return [
        (*r[:DERIVED_FROM], keys[r[ID]], *r[DERIVED_FROM + 1 :]) if r[ID] in keys else r
        for r in batch
    ]


def observations_export(filters: ObservationFilter) -> Export:
    """`derived_from` lists the inputs as `city/indicator/period` keys, `;`-separated."""
    return Export(
        "observations.csv", OBSERVATION_COLUMNS, observations_select(filters), ["id"], _derived_from
    )


def csv_responses(what: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a CSV export route."""
    return {
        200: {
            "description": f"{what}, as RFC 4180 CSV with a header row (UTF-8, CRLF).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }


# ---------------------------------------------------------------- CSV in

CSV_UPLOAD_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
IMPORT_REQUIRED = (
    "city_code",
    "indicator_code",
    "value",
    "value_text",
    "qualifier",
    "source_id",
    "quote",
)
IMPORT_IGNORED = ("id",)  # rows are matched by natural key, never by id


class ImportRow(ObservationBase):
    """One data row of an import: the export's columns, checked like an API write."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    derived_from: list[str] = Field(default_factory=list)
    unit_code: str | None = None
    dimension_code: str | None = None

    @field_validator("derived_from", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(";") if k.strip()]
        return [] if value is None else value

    @model_validator(mode="after")
    def _derivation(self) -> "ImportRow":
        check_derivation(self.is_derived, self.formula, self.derived_from)
        return self


# The model's own core validator: SQLModel's model_validate() wrapper costs more than the
# validation itself, and an import may have a million rows.
VALIDATE_ROW = ImportRow.__pydantic_validator__.validate_python


@dataclass
class ImportProblem:
    line: int
    column: str
    message: str


def uncell(value: str) -> str | None:
    """Inverse of cell() for text: empty is null, and the export's formula guard comes off."""
    if value == "":
        return None
    if value.startswith("'") and value[1:2] and value[1:].startswith(FORMULA_TRIGGERS):
        return value[1:]
    return value


def parse_import(
    data: bytes, max_rows: int
) -> tuple[list[tuple[int, ImportRow]], list[ImportProblem]]:
    """Validates every row of an import file (UTF-8, BOM optional, CRLF or LF); returns the
    rows that parsed and every error with its line and column."""
    errors: list[ImportProblem] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [ImportProblem(1, "", f"the file is not UTF-8 (byte {exc.start})")]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    known = set(OBSERVATION_COLUMNS)
    for column in header:
        if column not in known:
            errors.append(
                ImportProblem(
                    1, column, f"unknown column; expected some of: {', '.join(OBSERVATION_COLUMNS)}"
                )
            )
    for column in IMPORT_REQUIRED:
        if column not in header:
            errors.append(ImportProblem(1, column, "required column is missing"))
    if errors:
        return [], errors
    rows: list[tuple[int, ImportRow]] = []
    try:
        for record in reader:
            line = reader.line_num
            if len(rows) + len({e.line for e in errors}) >= max_rows:
                errors.append(ImportProblem(line, "", f"more than {max_rows} rows; split the file"))
                break
            if None in record or None in record.values():
                errors.append(ImportProblem(line, "", f"expected {len(header)} cells"))
                continue
            cells = {k: uncell(v) for k, v in record.items() if k not in IMPORT_IGNORED}
            try:
                rows.append((line, VALIDATE_ROW(cells)))
            except ValidationError as exc:
                for e in exc.errors():
                    column = str(e["loc"][0]) if e["loc"] else "row"
                    errors.append(ImportProblem(line, column, e["msg"]))
    except csv.Error as exc:
        errors.append(ImportProblem(reader.line_num, "", f"malformed CSV: {exc}"))
    return rows, errors


class ImportRejected(HTTPException):
    """A 422 listing every error of an import file, by line and column."""

    def __init__(self, errors: list[ImportProblem]) -> None:
        shown = errors[:1000]
        super().__init__(
            422, f"The file was not imported: {len(errors)} error(s); nothing was written."
        )
        self.errors = [
            FieldError(
                loc=f"body.line{e.line}.{e.column}" if e.column else f"body.line{e.line}",
                msg=e.message,
                type="import_error",
                line=e.line,
                column=e.column or None,
            )
            for e in shown
        ]
