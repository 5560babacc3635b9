"""What every model module shares: the metadata's naming convention, the controlled
vocabularies (qualifier, admin level, industry role, key scope) and the write-model bases."""

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

from annotated_types import Interval
from pydantic import BeforeValidator, ConfigDict, Strict, StringConstraints, model_validator
from sqlalchemy import MetaData
from sqlmodel import SQLModel

# Stable constraint names on SQLite and PostgreSQL; set before the first table.
SQLModel.metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

# Examples for the OpenAPI schemas, from the seed data.
QUOTE_EXAMPLE = "2023年，深圳战略性新兴产业增加值达 1.45 万亿元，占地区生产总值的比重为 41.9%。"
FORMULA_EXAMPLE = (
    "nev_output(changzhou; 2023) / nev_output_multiple_of_ningbo(changzhou; 2023) = 680000 / 3.6"
)


# How the source stated a value; never dropped, never folded into the number.
#   exact; more_than 超/超过 (strictly above); at_least 以上 (the value or above, in Chinese
#   statistical usage); at_most 以内/前N/N强 (the value or below: "top ten" is rank <= 10);
#   nearly 近 (just below); approximately 约, or rounded by a derivation (either side).
Qualifier = Literal["exact", "more_than", "at_least", "at_most", "nearly", "approximately"]
AdminLevel = Literal["municipality", "sub_provincial", "prefecture"]
# Why the source names an industry for a city: emerging 新兴产业 to grow; future 未来产业 to lay
# out ahead; cluster, a cluster slogan; anchor, built deliberately since a given year;
# high_carbon, energy- and carbon-intensive sectors weighing on the city.
IndustryRole = Literal["emerging", "future", "cluster", "anchor", "high_carbon"]


def sql_in(column: str, values: Any) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in get_args(values))})"


# read: identifies a client (no writes); write: data writes; admin: writes and the audit log.
Scope = Literal["read", "write", "admin"]


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- write models
# What clients may send. Server-owned fields (ids, versions, timestamps) are absent, and
# unknown fields are rejected, so no client can set them.

Code = Annotated[str, StringConstraints(pattern=CODE_PATTERN, max_length=64)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# A row id another row refers to: ids are INTEGER columns (PostgreSQL's is 32-bit).
RowId = Annotated[int, Interval(ge=1, le=2**31 - 1)]


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date string, e.g. 2024-03-01")
    return value


# A date sent as JSON: ISO 8601 text only (lax parsing also took numbers, as Unix timestamps).
DateText = Annotated[date, Strict(False), BeforeValidator(_iso_text)]


def _storable(value: Any) -> bool:
    """Text a database can hold: no NUL (PostgreSQL refuses it) and no unpaired surrogate
    (not encodable as UTF-8)."""
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _write_schema(schema: dict[str, Any], model: type) -> None:
    """The schema says what validation enforces: an update model's fields are optional
    (absent: unchanged) but null only where the column allows it; `schema_rules` add what
    spans fields."""
    schema.update(getattr(model, "schema_rules", {}))
    nullable = getattr(model, "nullable", None)
    if nullable is None:
        return
    for name, prop in schema.get("properties", {}).items():
        branches = prop.get("anyOf", [])
        if name in nullable or {"type": "null"} not in branches:
            continue
        rest = [b for b in branches if b != {"type": "null"}]
        del prop["anyOf"]
        prop.pop("default", None)
        prop.update(rest[0] if len(rest) == 1 else {"anyOf": rest})


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


class WriteModel(SQLModel):
    # Strict: a JSON body's types are taken as sent, so `false` or "2024" is no year, 1 is no
    # boolean and 0 is no date (lax validation coerced them, against the schema).
    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid", strict=True, json_schema_extra=_write_schema
    )

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        if isinstance(data, dict):
            bad = sorted(str(k) for k, v in data.items() if not _storable(v))
            if bad:
                raise ValueError(
                    f"{', '.join(bad)}: text may not contain NUL or unpaired surrogate characters"
                )
        return data

    @model_validator(mode="before")
    @classmethod
    def _json_integers(cls, data: Any) -> Any:
        """JSON does not tell 2024 from 2024.0, and neither does the schema's `integer`; strict
        validation would, so an integral number is taken as the integer it is."""
        if isinstance(data, dict):
            return {k: _integral(v) for k, v in data.items()}
        return data


class UpdateModel(WriteModel):
    """A partial update: only the fields sent change; null only where the column allows it."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> "UpdateModel":
        bad = sorted(
            f for f in self.model_fields_set if getattr(self, f) is None and f not in self.nullable
        )
        if bad:
            raise ValueError(f"{', '.join(bad)} cannot be null")
        return self


DERIVATION_RULE = "a derived value needs is_derived=true, a formula and derived_from ids; other values none of them"


def check_derivation(
    is_derived: bool | None, formula: str | None, inputs: Sequence[object] | None
) -> None:
    if not (bool(is_derived) == (formula is not None) == bool(inputs)):
        raise ValueError(DERIVATION_RULE)


def derivation_rules(required: bool) -> dict[str, Any]:
    """check_derivation as JSON Schema: is_derived, formula and derived_from agree (`required`:
    a derived value sends all three)."""
    derived: dict[str, Any] = {
        "properties": {
            "is_derived": {"const": True},
            "formula": {"type": "string"},
            "derived_from": {"minItems": 1},
        }
    }
    if required:
        derived["required"] = ["is_derived", "formula", "derived_from"]
    stated = {
        "properties": {
            "is_derived": {"const": False},
            "formula": {"type": "null"},
            "derived_from": {"maxItems": 0},
        }
    }
    return {"anyOf": [derived, stated]}
