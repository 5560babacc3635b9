"""Bulk CSV import of observations: parse and check every row (the export's columns, each
row validated like an API write), then apply them all in set-wise statements (a million rows
must not cost a million round trips), in one transaction."""

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import bindparam, insert, tuple_, update
from sqlmodel import Session, col, select
from starlette.exceptions import HTTPException

from app.config import Settings
from app.errors import FieldError
from app.export import FORMULA_TRIGGERS, OBSERVATION_COLUMNS
from app.models import (
    Derivation,
    ImportReport,
    Observation,
    ObservationBase,
    ObservationRevision,
    check_derivation,
    observation_key,
    parse_observation_key,
    utcnow,
)
from app.writes import OBSERVATION_DATA, References, audit, chunks

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


# pydantic's own validator for the model: SQLModel's model_validate() wrapper costs more than
# the validation itself, and an import may have a million rows.
VALIDATE_ROW = TypeAdapter(ImportRow).validate_python


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


OBSERVATION = Observation.__table__  # type: ignore[attr-defined]
Key = tuple[str, str, int | None, int]  # city, indicator, period, source


def _key(row: ImportRow) -> Key:
    return (row.city_code, row.indicator_code, row.period, row.source_id)


def _stored(session: Session, keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
    """The stored observations (deleted ones too) under these keys, with id, version and data."""
    wanted = set(keys)
    pairs = sorted({(k[0], k[1]) for k in wanted})
    found: dict[Key, dict[str, Any]] = {}
    columns = [OBSERVATION.c.id, OBSERVATION.c.version, OBSERVATION.c.deleted_at]
    columns += [OBSERVATION.c[f] for f in OBSERVATION_DATA]
    for batch in chunks(pairs, 400):
        stmt = select(*columns).where(
            tuple_(OBSERVATION.c.city_code, OBSERVATION.c.indicator_code).in_(batch)
        )
        for row in session.exec(stmt):
            data = dict(row._mapping)
            key = (data["city_code"], data["indicator_code"], data["period"], data["source_id"])
            if key in wanted:
                found[key] = data
    return found


def _resolve(session: Session, key: str, source_id: int) -> int | None:
    """The id of the live observation a `city/indicator/period` key names, if any."""
    try:
        city, indicator, period = parse_observation_key(key)
    except ValueError:
        return None
    stored = _stored(session, [(city, indicator, period, source_id)])
    data = stored.get((city, indicator, period, source_id))
    return data["id"] if data and data["deleted_at"] is None else None


def check_import(session: Session, rows: list[tuple[int, ImportRow]]) -> list[ImportProblem]:
    """Every problem of the parsed rows against the database and against each other."""
    problems: list[ImportProblem] = []
    refs = References.load(
        session,
        (row.model_dump(include={"city_code", "indicator_code", "source_id"}) for _, row in rows),
    )
    seen: dict[Key, int] = {}
    for line, row in rows:
        data = row.model_dump(include={"city_code", "indicator_code", "source_id"})
        for field, message in refs.problems(data, row.unit_code, row.dimension_code):
            problems.append(ImportProblem(line, field, message))
        key = _key(row)
        if key in seen:
            name = observation_key(*key[:3])
            problems.append(ImportProblem(line, "city_code", f"{name} repeats line {seen[key]}"))
        seen.setdefault(key, line)
    for line, row in rows:
        for text in row.derived_from:
            try:
                in_file = (*parse_observation_key(text), row.source_id) in seen
            except ValueError:
                in_file = False
            if not in_file and _resolve(session, text, row.source_id) is None:
                message = f"{text!r} names no observation of source {row.source_id}"
                problems.append(ImportProblem(line, "derived_from", message))
    return problems


def apply_rows(
    session: Session, rows: list[tuple[int, ImportRow]], actor: str, reason: str
) -> dict[str, int]:
    """Adds, updates or leaves each checked row by natural key, and writes one revision per
    changed row: a few set-wise statements per 500 rows."""
    stored = _stored(session, (_key(row) for _, row in rows))
    added: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    unchanged = 0
    for _, row in rows:
        data = row.model_dump(include=set(OBSERVATION_DATA))
        old = stored.get(_key(row))
        if old is None:
            added.append(data)
        elif old["deleted_at"] is None and all(old[f] == data[f] for f in OBSERVATION_DATA):
            unchanged += 1
        else:
            updated.append({**data, "b_id": old["id"], "version": old["version"] + 1})

    at = utcnow()
    revision_extra = {"deleted": False, "changed_at": at, "changed_by": actor, "reason": reason}
    ids: list[int] = []
    add = insert(OBSERVATION).returning(OBSERVATION.c.id, sort_by_parameter_order=True)
    for batch in chunks(added):
        ids += session.connection().execute(add, [{**d, "version": 1} for d in batch]).scalars()
    revisions = [
        {**d, "observation_id": i, "version": 1, **revision_extra}
        for d, i in zip(added, ids, strict=True)
    ]
    values: dict[str, Any] = {f: bindparam(f) for f in (*OBSERVATION_DATA, "version")}
    change = update(OBSERVATION).where(OBSERVATION.c.id == bindparam("b_id"))
    for batch in chunks(updated):
        session.connection().execute(change.values(**values, deleted_at=None), batch)
    revisions += [
        {
            **{f: u[f] for f in OBSERVATION_DATA},
            "observation_id": u["b_id"],
            "version": u["version"],
            **revision_extra,
        }
        for u in updated
    ]
    for batch in chunks(revisions):
        session.connection().execute(insert(ObservationRevision.__table__), batch)  # type: ignore[attr-defined]

    _link_inputs(
        session,
        rows,
        {
            **{_key_of(d): i for d, i in zip(added, ids, strict=True)},
            **{_key_of(u): u["b_id"] for u in updated},
        },
        stored,
    )
    return {"added": len(added), "updated": len(updated), "unchanged": unchanged}


def _key_of(data: dict[str, Any]) -> Key:
    return (data["city_code"], data["indicator_code"], data["period"], data["source_id"])


def _link_inputs(
    session: Session,
    rows: list[tuple[int, ImportRow]],
    written: dict[Key, int],
    stored: dict[Key, dict[str, Any]],
) -> None:
    """Derivation links: as the file says for every derived row, none for rows that are not
    derived (which may have been before)."""
    ids = {**{k: v["id"] for k, v in stored.items()}, **written}
    touched = [ids[_key(row)] for _, row in rows if row.is_derived or _key(row) in stored]
    have: dict[int, set[int]] = {}
    for batch in chunks(touched):
        for obs_id, input_id in session.exec(
            select(Derivation.observation_id, Derivation.input_id).where(
                col(Derivation.observation_id).in_(batch)
            )
        ):
            have.setdefault(obs_id, set()).add(input_id)
    for _, row in rows:
        obs_id = ids[_key(row)]
        want: set[int] = set()
        for text in row.derived_from:
            city, indicator, period = parse_observation_key(text)
            key = (city, indicator, period, row.source_id)
            found = ids.get(key) or _resolve(session, text, row.source_id)
            if found is not None:
                want.add(found)
        current = have.get(obs_id, set())
        for input_id in sorted(want - current):
            session.add(Derivation(observation_id=obs_id, input_id=input_id))
        for input_id in current - want:
            session.exec(
                Derivation.__table__.delete().where(  # type: ignore[attr-defined]
                    col(Derivation.observation_id) == obs_id, col(Derivation.input_id) == input_id
                )
            )
    session.flush()


def apply_import(
    session: Session, data: bytes, settings: Settings, actor: str, reason: str, dry_run: bool
) -> ImportReport:
    """Parses, checks and applies a CSV import in the session's one transaction: any problem
    rejects the whole file (ImportRejected, 422) and a dry run rolls back after counting."""
    rows, problems = parse_import(data, settings.import_max_rows)
    problems = sorted(problems + check_import(session, rows), key=lambda p: p.line)
    if problems:
        session.rollback()
        raise ImportRejected(problems)
    counts = apply_rows(session, rows, actor, reason)
    if dry_run:
        session.rollback()
    else:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()[:16]
        audit(
            session, actor, "import", "observation", digest, {**counts, "rows": len(rows)}, reason
        )
        session.commit()
    return ImportReport(dry_run=dry_run, rows=len(rows), **counts)
