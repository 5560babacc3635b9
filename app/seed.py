"""Loads seed/*.csv idempotently: validated row by row, upserted by natural key, one transaction.

A bad row fails the whole load with ``file:line: field: message``; nothing is half-written.
"""

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import Engine, text
from sqlmodel import Session, SQLModel, select

from app.models import (
    City,
    CityIndustry,
    ComparabilityFamily,
    Dimension,
    Indicator,
    Observation,
    Source,
    Unit,
    parse_observation_key,
)
from app.writes import (
    OBSERVATION_DATA,
    audit,
    current_inputs,
    find_observation,
    record_revision,
    set_inputs,
)

M = TypeVar("M", bound=SQLModel)


SEED_ACTOR = "seed"


class SeedError(ValueError):
    """A seed row that cannot be loaded; the message names the file and line."""


@dataclass
class Tally:
    added: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class SeedReport:
    files: dict[str, Tally] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(t.added + t.updated for t in self.files.values())


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, row) with empty cells as None; line numbers count the header as 1."""
    if not path.exists():
        raise SeedError(f"{path}: file not found")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row or None in row.values():
                raise SeedError(
                    f"{path}:{reader.line_num}: expected {len(reader.fieldnames or [])} columns"
                )
            yield reader.line_num, {k: (v if v != "" else None) for k, v in row.items()}


def _validate(model: type[M], data: dict[str, Any], where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "row"
        raise SeedError(f"{where}: {loc}: {first['msg']}") from None


def _upsert(
    session: Session, existing: M | None, new: M, tally: Tally, fields: Iterable[str] | None = None
) -> tuple[M, str]:
    """Adds `new`, or copies it onto `existing`; compares only `fields` (default: all but id)."""
    if existing is None:
        session.add(new)
        tally.added += 1
        return new, "added"
    names = set(fields) if fields is not None else set(type(new).model_fields) - {"id"}
    data = new.model_dump(include=names)
    if existing.model_dump(include=names) == data:
        tally.unchanged += 1
        return existing, "unchanged"
    existing.sqlmodel_update(data)
    tally.updated += 1
    return existing, "updated"


def _require(session: Session, model: type[SQLModel], key: Any, what: str, where: str) -> None:
    if key is not None and session.get(model, key) is None:
        raise SeedError(f"{where}: unknown {what} {key!r}")


def _load_by_pk(session: Session, path: Path, model: type[SQLModel], tally: Tally) -> None:
    pk = "id" if model is Source else "code"
    for line, data in _rows(path):
        row = _validate(model, data, f"{path}:{line}")
        _upsert(session, session.get(model, getattr(row, pk)), row, tally)
    session.flush()
    if pk == "id" and session.get_bind().dialect.name == "postgresql":
        # Rows came with their ids, so the id sequence never moved: move it past them, or
        # the next API-created row would be given id 1 again.
        table = model.__tablename__
        session.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        )


def _load_indicators(session: Session, path: Path, tally: Tally) -> None:
    for line, data in _rows(path):
        where = f"{path}:{line}"
        row = _validate(Indicator, data, where)
        _require(session, Dimension, row.dimension_code, "dimension", where)
        _require(session, Unit, row.unit_code, "unit", where)
        _require(session, ComparabilityFamily, row.family_code, "comparability family", where)
        _upsert(session, session.get(Indicator, row.code), row, tally)
    session.flush()


def _load_observations(session: Session, path: Path, tally: Tally) -> None:
    pending: list[tuple[str, Observation, list[str], str]] = []
    for line, data in _rows(path):
        where = f"{path}:{line}"
        unit = data.pop("unit_code", None)
        inputs = [k.strip() for k in (data.pop("derived_from", None) or "").split(";") if k.strip()]
        row = _validate(Observation, data, where)
        _require(session, City, row.city_code, "city", where)
        _require(session, Source, row.source_id, "source", where)
        indicator = session.get(Indicator, row.indicator_code)
        if indicator is None:
            raise SeedError(f"{where}: unknown indicator {row.indicator_code!r}")
        if unit is not None and unit != indicator.unit_code:
            raise SeedError(
                f"{where}: unit {unit!r} does not match indicator {indicator.code!r} "
                f"(its unit is {indicator.unit_code!r})"
            )
        if row.is_derived != bool(inputs):
            raise SeedError(
                f"{where}: derived_from must list the inputs of a derived value, and only of one"
            )
        existing = find_observation(
            session, row.city_code, row.indicator_code, row.period, row.source_id
        )
        obs, status = _upsert(session, existing, row, tally, OBSERVATION_DATA)
        if status == "updated":
            obs.version += 1
        pending.append((where, obs, inputs, status))
    session.flush()
    for where, obs, inputs, status in pending:
        wanted: set[int] = set()
        for key in inputs:
            try:
                found = find_observation(session, *parse_observation_key(key), obs.source_id)
            except ValueError:
                found = None
            if found is None:
                raise SeedError(f"{where}: derived_from names {key!r}, which is not in the file")
            assert found.id is not None
            wanted.add(found.id)
        if sorted(wanted) != current_inputs(session, obs):
            set_inputs(session, obs, wanted)
            if status == "unchanged":
                obs.version += 1
                status = "updated"
                tally.unchanged -= 1
                tally.updated += 1
        if status != "unchanged":
            record_revision(session, obs, SEED_ACTOR, f"seed: {where}")
    session.flush()


def _load_city_industries(session: Session, path: Path, tally: Tally) -> None:
    for line, data in _rows(path):
        where = f"{path}:{line}"
        row = _validate(CityIndustry, data, where)
        _require(session, City, row.city_code, "city", where)
        _require(session, Source, row.source_id, "source", where)
        existing = session.exec(
            select(CityIndustry).where(
                CityIndustry.city_code == row.city_code,
                CityIndustry.role == row.role,
                CityIndustry.name_zh == row.name_zh,
                CityIndustry.source_id == row.source_id,
            )
        ).first()
        _upsert(session, existing, row, tally)
    session.flush()


def load_seed(engine: Engine, seed_dir: Path) -> SeedReport:
    """Upserts every seed file in dependency order, in one transaction."""
    report = SeedReport()
    steps: list[tuple[str, Any]] = [
        ("units.csv", lambda s, p, t: _load_by_pk(s, p, Unit, t)),
        ("dimensions.csv", lambda s, p, t: _load_by_pk(s, p, Dimension, t)),
        ("families.csv", lambda s, p, t: _load_by_pk(s, p, ComparabilityFamily, t)),
        ("cities.csv", lambda s, p, t: _load_by_pk(s, p, City, t)),
        ("sources.csv", lambda s, p, t: _load_by_pk(s, p, Source, t)),
        ("indicators.csv", _load_indicators),
        ("observations.csv", _load_observations),
        ("city_industries.csv", _load_city_industries),
    ]
    with Session(engine) as session, session.begin():
        for name, load in steps:
            tally = report.files.setdefault(name, Tally())
            load(session, seed_dir / name, tally)
        if report.changed:
            counts = {name: vars(t) for name, t in report.files.items()}
            audit(session, SEED_ACTOR, "seed", "seed", seed_dir.name, counts, "python -m app seed")
    return report


def is_empty(engine: Engine) -> bool:
    with Session(engine) as session:
        return session.exec(select(Observation.id).limit(1)).first() is None
