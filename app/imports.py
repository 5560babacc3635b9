"""Bulk CSV import of observations: parse and check every row, then apply them all in set-wise
statements (a million rows must not cost a million round trips), in one transaction."""

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, insert, tuple_, update
from sqlmodel import Session, col, select

from app.config import Settings
from app.csvio import ImportProblem, ImportRejected, ImportRow, parse_import
from app.models import Derivation, ImportReport, Observation, ObservationRevision, utcnow
from app.writes import (
    OBSERVATION_DATA,
    References,
    _chunks,
    audit,
    observation_key,
    parse_observation_key,
)

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
    for batch in _chunks(pairs, 400):
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
    for batch in _chunks(added):
        ids += session.connection().execute(add, [{**d, "version": 1} for d in batch]).scalars()
    revisions = [
        {**d, "observation_id": i, "version": 1, **revision_extra}
        for d, i in zip(added, ids, strict=True)
    ]
    values: dict[str, Any] = {f: bindparam(f) for f in (*OBSERVATION_DATA, "version")}
    change = update(OBSERVATION).where(OBSERVATION.c.id == bindparam("b_id"))
    for batch in _chunks(updated):
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
    for batch in _chunks(revisions):
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
    for batch in _chunks(touched):
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
