"""CSV out: RFC 4180, UTF-8 (optional BOM for Excel), streamed in batches, formula-safe.
CSV in: the same columns, each row validated like an API write.

Each export is a plain spec (columns, statement, how to turn a batch into cells), shared by the
HTTP routes and `python -m app export`.
"""

import csv
import io
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter
from typing import Any, BinaryIO

from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import (
    Boolean,
    Engine,
    Float,
    Integer,
    LargeBinary,
    Select,
    String,
    case,
    cast,
    func,
    literal,
    null,
)
from sqlalchemy import select as core_select
from sqlmodel import select
from starlette.exceptions import HTTPException

from app.db import reading
from app.errors import FieldError
from app.models import City, ObservationBase, check_derivation
from app.prepared import Prepared, Reader
from app.queries import (
    ObservationFilter,
    database_writes,
    derived_input_keys,
    flag_text,
    float_as_repr,
    indicator_select,
    observations_select,
)

# A text cell starting with one of these is run as a formula by Excel and LibreOffice.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CSV_MEDIA_TYPE = "text/csv; charset=utf-8; header=present"


def _kind(column: Any) -> Any:
    return getattr(column.type, "impl_instance", column.type)  # SQLModel's AutoString wraps String


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
    kind = _kind(column)
    if isinstance(kind, Boolean):
        return flag_text(column)
    if isinstance(kind, String):
        formula = func.substr(column, 1, 1).in_(FORMULA_TRIGGERS)
        return case((formula, literal("'") + column), else_=column)
    return column


# ---------------------------------------------------------------- lines written by the database
#
# Fetching a row's 15 cells as Python objects and running them through csv.writer costs more
# than SQLite's whole query. So the export asks the database for each row as one UTF-8 string
# (SQLite's printf, PostgreSQL's format), each cell after a control byte that says whether it
# is text (which the formula guard looks at) and whether it is the row's first. A batch of
# such lines is CSV after one translate() (the separators become commas, or go), unless some
# text needs what csv.writer would add: quotes (a `,` `"` CR or LF inside) or the guard (a
# trigger first). unclean() finds the lines that need more with a few scans of the batch
# (mostly none); each is split at its separators and written by csv.writer, and one that
# cannot be split (a MARK, where the database could not write a cell: a float it can't print
# as repr() does, a cell computed in Python) is fetched as cells. The bytes are the same.
# Stored text has no NUL (writes refuse it), at which printf would cut a cell short.

FIRST_TEXT, FIRST_OTHER, TEXT, OTHER = b"\x1d", b"\x1c", b"\x1f", b"\x1e"
SEPARATORS = FIRST_TEXT + FIRST_OTHER + TEXT + OTHER
MARK = "\x1a"
TO_COMMAS = bytes.maketrans(TEXT + OTHER, b",,")  # and FIRST_* are deleted
# CR is left to the count: each line ends with one, which follows a last text cell left empty
GUARDED_STARTS = tuple(t.encode() for t in FORMULA_TRIGGERS if t != "\r")
LINE_DIALECTS = ("sqlite", "postgresql")


def line_cell(column: Any, dialect: str) -> Any:
    """A cell as the line's %s should print it, or MARK where only Python can write it."""
    kind = _kind(column)
    if isinstance(kind, Boolean):
        return flag_text(column)
    if isinstance(kind, String | Integer):
        return column
    if isinstance(kind, Float):
        text, printable = float_as_repr(column, dialect)
        return case((column.is_(None), null()), (printable, text), else_=literal(MARK))
    return literal(MARK)


def line_of(form: str, cells: list[Any], dialect: str) -> Any:
    """The cells printed by the %s of `form`, as UTF-8 bytes."""
    if dialect == "postgresql":
        return func.convert_to(func.format(form, *cells), literal("UTF8"))
    return cast(func.printf(form, *cells), LargeBinary)


# What needs more than as_csv(), each as (a byte to look for first, as memchr finds it fast,
# the bytes that need it): a comma, a quote, a MARK, a text cell starting with a trigger.
MARKED = MARK.encode()
UNCLEAN = (
    (b",", b","),
    (b'"', b'"'),
    (MARKED, MARKED),
    *((t, s + t) for s in (TEXT, FIRST_TEXT) for t in GUARDED_STARTS),
)


def separators_only(lines: bytes, rows: int, cells: int) -> bool:
    """Exactly the separators and CR LFs of `rows` lines of `cells` cells: none in the data."""
    return len(lines) - len(lines.translate(None, SEPARATORS + b"\r\n")) == rows * (cells + 2)


def clean(lines: bytes, rows: int, cells: int) -> bool:
    """Whether `rows` lines of `cells` line_cell()s are CSV once as_csv()."""
    return separators_only(lines, rows, cells) and not any(
        first in lines and found in lines for first, found in UNCLEAN
    )


def unclean(joined: bytes, lines: Sequence[bytes], cells: int) -> set[int]:
    """The indexes of the lines clean() fails, found in the joined batch by find() (memchr
    speed), so a batch with a few such lines costs a few lookups, not one check per line."""
    if not separators_only(joined, len(lines), cells):  # only line by line can tell where
        return {i for i, line in enumerate(lines) if not clean(line, 1, cells)}
    ends: list[int] = []  # where each line ends in `joined`, once something is found
    bad: set[int] = set()
    for first, found in UNCLEAN:
        at = joined.find(found) if first in joined else -1
        while at >= 0:
            ends = ends or list(accumulate(map(len, lines)))
            line = bisect_right(ends, at)
            bad.add(line)
            at = joined.find(found, ends[line])  # the rest of that line is written anyway
    return bad


SPLIT = re.compile("([\x1c-\x1f])")
TEXT_SEPARATORS = (FIRST_TEXT.decode(), TEXT.decode())


def split_line(line: bytes, cells: int) -> list[str] | None:
    """A line's cells, the text ones through cell() (their guard), when they can be told
    apart: no MARK, and exactly one separator per cell (none in the data)."""
    if MARKED in line or not line.endswith(b"\r\n"):
        return None
    parts = SPLIT.split(line[:-2].decode())  # ['', separator, cell, separator, cell, ...]
    if len(parts) != 2 * cells + 1:
        return None
    return [
        cell(v) if s in TEXT_SEPARATORS else v
        for s, v in zip(parts[1::2], parts[2::2], strict=True)
    ]


def as_csv(lines: bytes) -> bytes:
    return lines.translate(TO_COMMAS, FIRST_TEXT + FIRST_OTHER)


BATCH_ROWS = 10_000
LINE = itemgetter(0)


class Echo:
    """A file whose write() returns what it is given: csv.writer(Echo()).writerow(row) is
    the row's CSV line."""

    def write(self, line: str) -> str:
        return line


def crlf_writer() -> Any:
    """A csv.writer whose writerow(row) returns the row's CRLF-terminated line (one per
    thread: a writer keeps its record between calls)."""
    return csv.writer(Echo(), lineterminator="\r\n")


@dataclass
class Export:
    filename: str
    columns: Sequence[str]
    stmt: Select[Any]
    order_by: Sequence[str]  # the first is each row's unique key
    # Fills the cells computed in Python (derived_from); returns the batch's rows.
    extra: Callable[[Reader, Sequence[Any]], Sequence[Any]] | None = None
    # Which rows `extra` has something to write in; without it, every row goes through Python.
    extra_rows: Callable[[Any], Any] | None = None
    batch_rows: int = BATCH_ROWS
    # Above this share of a batch's lines needing Python, the batch is fetched as cells
    refetch_share: float = 0.25

    def select(self, keys: Callable[[Any], Any] | None = None) -> Select[Any]:
        """The statement's rows as CSV cells in `columns` order (others, null until `extra`);
        with `keys`, only the rows whose key column it accepts."""
        rows = self.stmt.subquery("export")
        cells = [
            csv_safe(rows.c[c]).label(c) if c in rows.c else null().label(c) for c in self.columns
        ]
        stmt = core_select(*cells).order_by(*(rows.c[c] for c in self.order_by))
        return stmt if keys is None else stmt.where(keys(rows.c[self.order_by[0]]))

    def _fetched(self, reader: Reader, keys: Callable[[Any], Any]) -> Iterator[str]:
        """The CSV lines of the rows `keys` accepts, fetched as cells (the reader's cursor)."""
        rows = Prepared.compile(self.select(keys), reader.dialect).rows(reader.cursor, {})
        return self._written(reader, rows)

    def line_select(self, dialect: str) -> Select[Any]:
        """(line, key): each row as one string of line_cell()s (see clean())."""
        rows = self.stmt.subquery("export")
        cells, form = [], b""
        for i, c in enumerate(self.columns):
            if c in rows.c:
                cells.append(line_cell(rows.c[c], dialect))
                text = isinstance(_kind(rows.c[c]), String)
            else:  # computed in Python
                rows_of = self.extra_rows(rows) if self.extra_rows is not None else literal(True)
                cells.append(case((rows_of, literal(MARK)), else_=null()))
                text = False
            first = i == 0
            form += (FIRST_TEXT if first else TEXT) if text else (FIRST_OTHER if first else OTHER)
            form += b"%s"
        line = line_of(form.decode() + "\r\n", cells, dialect)
        return core_select(line.label("line"), rows.c[self.order_by[0]].label("key")).order_by(
            *(rows.c[c] for c in self.order_by)
        )

    def chunks(
        self, engine: Engine, bom: bool = False, by_database: bool | None = None
    ) -> Iterator[bytes]:
        """UTF-8: the header, then one chunk of CRLF-terminated lines per BATCH_ROWS rows,
        straight from the driver's cursor, so memory stays flat. `by_database` (default: where
        it can) has the database write the lines; else every row goes through csv.writer."""
        header = crlf_writer().writerow(self.columns)
        yield (("\ufeff" if bom else "") + header).encode()
        dialect = engine.dialect.name
        by_lines = database_writes(dialect, LINE_DIALECTS) if by_database is None else by_database
        statement = Prepared.compile(
            self.line_select(dialect) if by_lines else self.select(), engine.dialect
        )
        with reading(engine) as reader, closing(reader.stream_cursor()) as stream:
            # Python's cells are fetched on the reader's own cursor, between batches of this one
            for batch in statement.batches(stream, {}, self.batch_rows):
                if by_lines:
                    yield self._from_lines(reader, batch)
                else:
                    yield "".join(self._written(reader, batch)).encode()

    def _written(self, reader: Reader, rows: Sequence[Any]) -> Iterator[str]:
        """Rows of cells, through `extra`, as csv.writer writes them: a line each."""
        writer = crlf_writer()
        return map(writer.writerow, rows if self.extra is None else self.extra(reader, rows))

    def _from_lines(self, reader: Reader, batch: Sequence[Any]) -> bytes:
        """The database's lines as CSV. Lines that need more than as_csv() (see unclean()) are
        split into their cells and written by csv.writer; one that cannot be split (a MARK, a
        separator in the data) is fetched as cells first."""
        cells = len(self.columns)
        lines = list(map(LINE, batch))
        joined = b"".join(lines)
        bad = unclean(joined, lines, cells)
        if not bad:
            return as_csv(joined)
        if len(bad) > self.refetch_share * len(lines):  # cheaper as cells, all at once
            first, last = batch[0][1], batch[-1][1]
            return "".join(self._fetched(reader, lambda k: k.between(first, last))).encode()
        writer = crlf_writer()
        out: list[Any] = []  # CSV bytes, or the key of a row still to fetch
        start = 0  # of the run of good lines not yet added
        for i in sorted(bad):
            out.append(as_csv(b"".join(lines[start:i])))
            split = split_line(lines[i], cells)
            out.append(batch[i][1] if split is None else writer.writerow(split).encode())
            start = i + 1
        out.append(as_csv(b"".join(lines[start:])))
        keys = [k for k in out if not isinstance(k, bytes)]
        if keys:
            fetched = self._fetched(reader, lambda k: k.in_(keys))  # in key order, as the batch
            out = [k if isinstance(k, bytes) else next(fetched).encode() for k in out]
        return b"".join(out)

    def response(self, engine: Engine, bom: bool) -> StreamingResponse:
        """Streams every row; the stream owns its session, which outlives the request's."""
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
        "observations.csv",
        OBSERVATION_COLUMNS,
        observations_select(filters),
        ["id"],
        _derived_from,
        extra_rows=lambda rows: rows.c.is_derived,
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
