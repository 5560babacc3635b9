"""Curators' writes: validation, revisions and the audit trail, shared by the API, the CSV
import and the seed. Callers own the transaction (on SQLite it began with BEGIN IMMEDIATE)."""

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, SQLModel, col, select
from starlette.exceptions import HTTPException

from app.config import Settings
from app.csvio import ImportProblem, ImportRejected, ImportRow, parse_import
from app.errors import BadRequest
from app.models import (
    AuditEvent,
    City,
    CityIndustry,
    ComparabilityFamily,
    Derivation,
    Dimension,
    ImportReport,
    Indicator,
    Observation,
    ObservationBase,
    ObservationRevision,
    Source,
    Unit,
    check_derivation,
    utcnow,
)

OBSERVATION_DATA = tuple(ObservationBase.model_fields)
Problems = list[tuple[str, str]]  # (field, message)


class Conflict(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


def invalid(problems: Problems) -> BadRequest:
    return BadRequest("; ".join(f"{field}: {msg}" for field, msg in problems), problems)


def audit(
    session: Session, actor: str, action: str, resource: str, key: object, changes: Any, reason: str
) -> None:
    session.add(
        AuditEvent(
            at=utcnow(),
            actor=actor,
            action=action,
            resource=resource,
            resource_key=str(key),
            changes=json.dumps(changes, ensure_ascii=False, default=str, sort_keys=True),
            reason=reason,
        )
    )


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}


# ---------------------------------------------------------------- observations


def record_revision(session: Session, obs: Observation, actor: str, reason: str) -> None:
    """Appends the observation as it now stands to its history (call after bumping version)."""
    session.flush()
    assert obs.id is not None
    session.add(
        ObservationRevision(
            observation_id=obs.id,
            version=obs.version,
            **{f: getattr(obs, f) for f in OBSERVATION_DATA},
            deleted=obs.deleted_at is not None,
            changed_at=obs.deleted_at or utcnow(),
            changed_by=actor,
            reason=reason,
        )
    )


def set_inputs(session: Session, obs: Observation, inputs: Iterable[int]) -> None:
    assert obs.id is not None
    wanted = set(inputs)
    have = {
        d.input_id: d
        for d in session.exec(select(Derivation).where(Derivation.observation_id == obs.id))
    }
    for input_id in sorted(wanted - have.keys()):
        session.add(Derivation(observation_id=obs.id, input_id=input_id))
    for input_id in have.keys() - wanted:
        session.delete(have[input_id])


def current_inputs(session: Session, obs: Observation) -> list[int]:
    return sorted(
        session.exec(select(Derivation.input_id).where(Derivation.observation_id == obs.id))
    )


def observation_key(city: str, indicator: str, period: int | None) -> str:
    """The natural key CSV files use to point at an observation: `city/indicator/period`."""
    return f"{city}/{indicator}/{'-' if period is None else period}"


def parse_observation_key(key: str) -> tuple[str, str, int | None]:
    """Inverse of observation_key; raises ValueError on a malformed key."""
    city, indicator, period = key.split("/")
    return city, indicator, None if period == "-" else int(period)


def find_observation(
    session: Session, city: str, indicator: str, period: int | None, source_id: int
) -> Observation | None:
    """By natural key, deleted or not."""
    period_match = (
        col(Observation.period).is_(None) if period is None else col(Observation.period) == period
    )
    return session.exec(
        select(Observation).where(
            Observation.city_code == city,
            Observation.indicator_code == indicator,
            period_match,
            Observation.source_id == source_id,
        )
    ).first()


def observation_problems(
    session: Session, data: dict[str, Any], unit_code: str | None, inputs: Iterable[int]
) -> Problems:
    """What is wrong with an observation's references: unknown codes, a unit that is not the
    indicator's, derivation inputs that do not exist."""
    problems: Problems = []
    if session.get(City, data["city_code"]) is None:
        problems.append(("city_code", f"unknown city {data['city_code']!r} (see /api/v1/cities)"))
    indicator = session.get(Indicator, data["indicator_code"])
    if indicator is None:
        problems.append(
            (
                "indicator_code",
                f"unknown indicator {data['indicator_code']!r} (see /api/v1/indicators)",
            )
        )
    elif unit_code is not None and unit_code != indicator.unit_code:
        problems.append(
            (
                "unit_code",
                f"unit {unit_code!r} does not match indicator {indicator.code!r}, whose unit is {indicator.unit_code!r}",
            )
        )
    if session.get(Source, data["source_id"]) is None:
        problems.append(("source_id", f"unknown source {data['source_id']} (see /api/v1/sources)"))
    for input_id in inputs:
        found = session.get(Observation, input_id)
        if found is None or found.deleted_at is not None:
            problems.append(("derived_from", f"input observation {input_id} does not exist"))
        elif input_id == data.get("id"):
            problems.append(("derived_from", "an observation cannot be derived from itself"))
    return problems


def _key(data: dict[str, Any]) -> str:
    period = data["period"] if data["period"] is not None else "undated"
    return f"{data['city_code']}/{data['indicator_code']}/{period} from source {data['source_id']}"


def create_observation(
    session: Session,
    data: dict[str, Any],
    inputs: list[int],
    unit_code: str | None,
    actor: str,
    reason: str,
) -> Observation:
    """A new observation, or a deleted one brought back under the same key (its history goes on)."""
    problems = observation_problems(session, data, unit_code, inputs)
    if problems:
        raise invalid(problems)
    obs = find_observation(
        session, data["city_code"], data["indicator_code"], data["period"], data["source_id"]
    )
    if obs is not None and obs.deleted_at is None:
        raise Conflict(
            f"An observation for {_key(data)} exists already (id {obs.id}); PATCH it instead."
        )
    if obs is None:
        obs = Observation(**data)
        session.add(obs)
        session.flush()
    else:
        obs.sqlmodel_update(data)
        obs.deleted_at = None
        obs.version += 1
    set_inputs(session, obs, inputs)
    record_revision(session, obs, actor, reason)
    audit(session, actor, "create", "observation", obs.id, {**data, "derived_from": inputs}, reason)
    return obs


def update_observation(
    session: Session,
    obs: Observation,
    changes: dict[str, Any],
    inputs: list[int] | None,
    unit_code: str | None,
    actor: str,
    reason: str,
) -> bool:
    """Applies a correction as a new version; False if it changes nothing."""
    old = {f: getattr(obs, f) for f in OBSERVATION_DATA}
    new = {**old, **changes}
    old_inputs = current_inputs(session, obs)
    new_inputs = old_inputs if inputs is None else sorted(set(inputs))
    try:
        check_derivation(new["is_derived"], new["formula"], new_inputs)
    except ValueError as exc:
        raise invalid([("derived_from", str(exc))]) from None
    problems = observation_problems(session, {**new, "id": obs.id}, unit_code, new_inputs)
    if problems:
        raise invalid(problems)
    changed = diff(old, new)
    if new_inputs != old_inputs:
        changed["derived_from"] = [old_inputs, new_inputs]
    if not changed:
        return False
    if {"period", "source_id"} & changed.keys():
        clash = find_observation(
            session, new["city_code"], new["indicator_code"], new["period"], new["source_id"]
        )
        if clash is not None and clash.id != obs.id:
            raise Conflict(f"An observation for {_key(new)} exists already (id {clash.id}).")
    obs.sqlmodel_update(changes)
    obs.version += 1
    set_inputs(session, obs, new_inputs)
    record_revision(session, obs, actor, reason)
    audit(session, actor, "update", "observation", obs.id, changed, reason)
    return True


def delete_observation(session: Session, obs: Observation, actor: str, reason: str) -> None:
    """Soft delete: gone from current reads, kept in the history and in as_of reads."""
    dependents = session.exec(
        select(Derivation.observation_id)
        .join(Observation, col(Observation.id) == Derivation.observation_id)
        .where(Derivation.input_id == obs.id, col(Observation.deleted_at).is_(None))
    ).all()
    if dependents:
        raise Conflict(
            f"Observation {obs.id} is an input of observation(s) {sorted(dependents)}; correct or delete those first."
        )
    obs.deleted_at = utcnow()
    obs.version += 1
    record_revision(session, obs, actor, reason)
    audit(session, actor, "delete", "observation", obs.id, {}, reason)


# ---------------------------------------------------------------- reference rows

# (model, column, what): the references each reference table's rows must satisfy
REFERENCES: dict[str, tuple[tuple[type[SQLModel], str, str], ...]] = {
    "indicator": (
        (Dimension, "dimension_code", "dimension"),
        (Unit, "unit_code", "unit"),
        (ComparabilityFamily, "family_code", "comparability family"),
    ),
}
# Who points at a row: a row still pointed at cannot be deleted.
REFERRED_BY: dict[str, tuple[tuple[type[SQLModel], str], ...]] = {
    "city": ((Observation, "city_code"), (CityIndustry, "city_code")),
    "indicator": ((Observation, "indicator_code"),),
    "source": ((Observation, "source_id"), (CityIndustry, "source_id")),
}


def reference_problems(session: Session, resource: str, data: dict[str, Any]) -> Problems:
    return [
        (column, f"unknown {what} {data[column]!r}")
        for model, column, what in REFERENCES.get(resource, ())
        if data.get(column) is not None and session.get(model, data[column]) is None
    ]


def create_row(
    session: Session, resource: str, row: SQLModel, key: object, actor: str, reason: str
) -> SQLModel:
    data = row.model_dump()
    problems = reference_problems(session, resource, data)
    if problems:
        raise invalid(problems)
    if key is not None and session.get(type(row), key) is not None:
        raise Conflict(f"A {resource} {key!r} exists already; PATCH it instead.")
    session.add(row)
    session.flush()
    audit(
        session,
        actor,
        "create",
        resource,
        getattr(row, "code", None) or getattr(row, "id", None),
        data,
        reason,
    )
    return row


def update_row(
    session: Session, resource: str, row: SQLModel, changes: dict[str, Any], actor: str, reason: str
) -> None:
    problems = reference_problems(session, resource, changes)
    if problems:
        raise invalid(problems)
    changed = diff(row.model_dump(), changes)
    if changed:
        row.sqlmodel_update(changes)
        audit(
            session,
            actor,
            "update",
            resource,
            getattr(row, "code", None) or getattr(row, "id", None),
            changed,
            reason,
        )


def delete_row(
    session: Session, resource: str, row: SQLModel, key: object, actor: str, reason: str
) -> None:
    for model, column in REFERRED_BY[resource]:
        used = session.exec(select(model).where(getattr(model, column) == key).limit(1)).first()
        if used is not None:
            raise Conflict(
                f"The {resource} {key!r} is still used by {model.__tablename__} rows (deleted observations "
                "included, since their history refers to it); it cannot be deleted."
            )
    session.delete(row)
    audit(session, actor, "delete", resource, key, row.model_dump(), reason)


# ---------------------------------------------------------------- bulk import


def _resolve(session: Session, key: str, source_id: int) -> Observation | None:
    try:
        found = find_observation(session, *parse_observation_key(key), source_id)
    except ValueError:
        return None
    return found if found is not None and found.deleted_at is None else None


def check_import(session: Session, rows: list[tuple[int, ImportRow]]) -> list[ImportProblem]:
    """Every problem of the parsed rows against the database and each other."""
    problems: list[ImportProblem] = []
    seen: dict[tuple[str, int], int] = {}
    for line, row in rows:
        data = row.model_dump(include=set(OBSERVATION_DATA))
        for field, message in observation_problems(session, data, row.unit_code, ()):
            problems.append(ImportProblem(line, field, message))
        indicator = session.get(Indicator, row.indicator_code)
        if indicator and row.dimension_code not in (None, indicator.dimension_code):
            message = f"indicator {indicator.code!r} is in dimension {indicator.dimension_code!r}"
            problems.append(ImportProblem(line, "dimension_code", message))
        key = (observation_key(row.city_code, row.indicator_code, row.period), row.source_id)
        if key in seen:
            problems.append(ImportProblem(line, "city_code", f"{key[0]} repeats line {seen[key]}"))
        seen.setdefault(key, line)
    for line, row in rows:
        for key_text in row.derived_from:
            if (key_text, row.source_id) not in seen and _resolve(
                session, key_text, row.source_id
            ) is None:
                message = f"{key_text!r} names no observation of source {row.source_id}"
                problems.append(ImportProblem(line, "derived_from", message))
    return sorted(problems, key=lambda p: p.line)


def apply_rows(
    session: Session, rows: list[tuple[int, ImportRow]], actor: str, reason: str
) -> dict[str, int]:
    """Adds, updates or leaves each checked row, by natural key; revisions for what changed."""
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    applied: list[tuple[ImportRow, Observation]] = []
    for _line, row in rows:
        data = row.model_dump(include=set(OBSERVATION_DATA))
        obs = find_observation(
            session, row.city_code, row.indicator_code, row.period, row.source_id
        )
        if obs is None:
            obs = Observation(**data)
            session.add(obs)
            status = "added"
        elif obs.deleted_at is None and {f: getattr(obs, f) for f in OBSERVATION_DATA} == data:
            status = "unchanged"
        else:
            obs.sqlmodel_update(data)
            obs.deleted_at = None
            obs.version += 1
            status = "updated"
        counts[status] += 1
        if status != "unchanged":
            record_revision(session, obs, actor, reason)
        applied.append((row, obs))
    session.flush()
    for row, obs in applied:  # inputs may be rows of this same file, flushed just now
        inputs = [
            found.id
            for k in row.derived_from
            if (found := _resolve(session, k, row.source_id)) and found.id
        ]
        if sorted(inputs) != current_inputs(session, obs):
            set_inputs(session, obs, inputs)
    return counts


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
