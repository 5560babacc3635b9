"""CSV out: RFC 4180, UTF-8 (optional BOM for Excel), streamed in batches, formula-safe.
CSV in: the same columns, each row validated like an API write.

Each export is a plain spec (columns, statement, how to turn a batch into cells), shared by the
HTTP routes and `python -m app export`.
"""

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Engine, Select
from sqlmodel import Session, col, select
from starlette.exceptions import HTTPException

from app.errors import FieldError
from app.models import City, Indicator, ObservationBase, check_derivation
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
