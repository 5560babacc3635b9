"""Curators' writes: validation, revisions and the audit trail, shared by the API, the CSV
import and the seed. Callers own the transaction (on SQLite it began with BEGIN IMMEDIATE)."""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, SQLModel, col, select
from starlette.exceptions import HTTPException

from app.errors import BadRequest
from app.models import (
    AuditEvent,
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
    check_derivation,
    utcnow,
)

OBSERVATION_DATA = tuple(ObservationBase.model_fields)
REFERENCE_FIELDS = ("city_code", "indicator_code", "source_id")
# The history and the audit trail are appended by plain INSERTs on their tables, in the
# caller's transaction: nothing reads them back as objects, and the ORM's unit of work cost
# about 0.25 ms of CPU per row where the INSERT costs 0.04 ms.
INSERT_AUDIT_EVENT = insert(AuditEvent.__table__)  # type: ignore[attr-defined]
INSERT_REVISION = insert(ObservationRevision.__table__)  # type: ignore[attr-defined]
Problems = list[tuple[str, str]]  # (field, message)


class Conflict(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


def invalid(problems: Problems) -> BadRequest:
    return BadRequest("; ".join(f"{field}: {msg}" for field, msg in problems), problems)


def audit(
    session: Session, actor: str, action: str, resource: str, key: object, changes: Any, reason: str
) -> None:
    session.execute(
        INSERT_AUDIT_EVENT,
        {
            "at": utcnow(),
            "actor": actor,
            "action": action,
            "resource": resource,
            "resource_key": str(key),
            "changes": json.dumps(changes, ensure_ascii=False, default=str, sort_keys=True),
            "reason": reason,
        },
    )


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}


# ---------------------------------------------------------------- observations


def record_revision(session: Session, obs: Observation, actor: str, reason: str) -> None:
    """Appends the observation as it now stands to its history (call after bumping version)."""
    session.flush()
    assert obs.id is not None
    session.execute(
        INSERT_REVISION,
        {
            "observation_id": obs.id,
            "version": obs.version,
            **{f: getattr(obs, f) for f in OBSERVATION_DATA},
            "deleted": obs.deleted_at is not None,
            "changed_at": obs.deleted_at or utcnow(),
            "changed_by": actor,
            "reason": reason,
        },
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


def chunks(values: Iterable[Any], size: int = 500) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class References:
    """The cities, indicators (with unit and dimension) and sources that rows may name,
    loaded in a few queries whether one row is checked or a million."""

    cities: set[str]
    indicators: dict[str, tuple[str, str]]  # code -> (unit_code, dimension_code)
    sources: set[int]

    @classmethod
    def load(cls, session: Session, rows: Iterable[dict[str, Any]]) -> "References":
        rows = list(rows)
        cities: set[str] = set()
        indicators: dict[str, tuple[str, str]] = {}
        sources: set[int] = set()
        for batch in chunks({r["city_code"] for r in rows}):
            cities |= set(session.exec(select(City.code).where(col(City.code).in_(batch))))
        for batch in chunks({r["indicator_code"] for r in rows}):
            found = session.exec(
                select(Indicator.code, Indicator.unit_code, Indicator.dimension_code).where(
                    col(Indicator.code).in_(batch)
                )
            )
            indicators.update({code: (unit, dimension) for code, unit, dimension in found})
        for batch in chunks({r["source_id"] for r in rows}):
            sources |= {
                i for i in session.exec(select(Source.id).where(col(Source.id).in_(batch))) if i
            }
        return cls(cities, indicators, sources)

    def problems(
        self, data: dict[str, Any], unit_code: str | None, dimension_code: str | None = None
    ) -> Problems:
        """Unknown codes, and a unit or dimension that is not the indicator's."""
        problems: Problems = []
        if data["city_code"] not in self.cities:
            problems.append(
                ("city_code", f"unknown city {data['city_code']!r} (see /api/v1/cities)")
            )
        indicator = self.indicators.get(data["indicator_code"])
        code = data["indicator_code"]
        if indicator is None:
            problems.append(
                ("indicator_code", f"unknown indicator {code!r} (see /api/v1/indicators)")
            )
        else:
            unit, dimension = indicator
            if unit_code is not None and unit_code != unit:
                message = (
                    f"unit {unit_code!r} does not match indicator {code!r}, whose unit is {unit!r}"
                )
                problems.append(("unit_code", message))
            if dimension_code is not None and dimension_code != dimension:
                problems.append(
                    ("dimension_code", f"indicator {code!r} is in dimension {dimension!r}")
                )
        if data["source_id"] not in self.sources:
            problems.append(
                ("source_id", f"unknown source {data['source_id']} (see /api/v1/sources)")
            )
        return problems


def observation_problems(
    session: Session, data: dict[str, Any], unit_code: str | None, inputs: Iterable[int]
) -> Problems:
    """What is wrong with one observation's references: unknown codes, a unit that is not the
    indicator's, derivation inputs that do not exist."""
    return References.load(session, [data]).problems(data, unit_code) + input_problems(
        session, data.get("id"), inputs
    )


def input_problems(session: Session, obs_id: int | None, inputs: Iterable[int]) -> Problems:
    """Derivation inputs that do not exist, or that are the observation itself."""
    problems: Problems = []
    for input_id in inputs:
        found = session.get(Observation, input_id)
        if found is None or found.deleted_at is not None:
            problems.append(("derived_from", f"input observation {input_id} does not exist"))
        elif input_id == obs_id:
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
    old_inputs = current_inputs(session, obs) if obs.is_derived else []  # stated: none
    new_inputs = old_inputs if inputs is None else sorted(set(inputs))
    try:
        check_derivation(new["is_derived"], new["formula"], new_inputs)
    except ValueError as exc:  # the body agrees with itself (ObservationUpdate), not with the row
        raise Conflict(
            f"{exc}; observation {obs.id} is {'derived' if obs.is_derived else 'stated'}: "
            "send is_derived, formula and derived_from together to change that"
        ) from None
    # The row's references and inputs were checked when they were written (and a live input
    # cannot be deleted): check only those this correction changes or states.
    problems: Problems = []
    if unit_code is not None or any(new[k] != old[k] for k in REFERENCE_FIELDS):
        problems += References.load(session, [new]).problems(new, unit_code)
    if new_inputs != old_inputs:
        problems += input_problems(session, obs.id, new_inputs)
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
    if new_inputs != old_inputs:
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
