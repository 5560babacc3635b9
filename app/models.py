"""Tables and their API schemas side by side (SQLModel's Base / table / Public pattern).

Natural codes (slugs such as ``ningbo``) are the keys of the reference tables, so CSV
exports and imports read the same as the API. Observations and sources have integer ids.
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import ConfigDict, StringConstraints, model_validator
from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, MetaData, String, text
from sqlmodel import Field, SQLModel

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


def _in(column: str, values: Any) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in get_args(values))})"


# ---------------------------------------------------------------- unit


class UnitBase(SQLModel):
    code: str = Field(
        primary_key=True,
        max_length=64,
        description="Unit code.",
        schema_extra={"examples": ["percent"]},
    )
    name_zh: str = Field(max_length=64, schema_extra={"examples": ["百分比"]})
    name_en: str = Field(max_length=64, schema_extra={"examples": ["percent"]})
    symbol: str = Field(max_length=32, schema_extra={"examples": ["%"]})


class Unit(UnitBase, table=True):
    pass


class UnitPublic(UnitBase):
    """A unit of measure, e.g. percent or 亿元 (100 million yuan)."""


# ---------------------------------------------------------------- dimension


class DimensionBase(SQLModel):
    code: str = Field(
        primary_key=True, max_length=64, schema_extra={"examples": ["new_industries"]}
    )
    position: int = Field(description="Order in which the source lists the dimension (1-4).")
    name_zh: str = Field(max_length=64, schema_extra={"examples": ["新产业"]})
    name_en: str = Field(max_length=64, schema_extra={"examples": ["New industries"]})
    description_zh: str = Field(description="The source's own definition, verbatim.")
    description_en: str = Field(description="An English rendering of the source's definition.")


class Dimension(DimensionBase, table=True):
    pass


class DimensionPublic(DimensionBase):
    """One of the four 'new' dimensions, with the source's own definition."""


# ---------------------------------------------------------------- comparability family


class FamilyBase(SQLModel):
    code: str = Field(primary_key=True, max_length=64, schema_extra={"examples": ["sei_share"]})
    name_zh: str = Field(max_length=128)
    name_en: str = Field(max_length=128)
    note: str = Field(description="Why the members must not be ranked or compared as one series.")


class ComparabilityFamily(FamilyBase, table=True):
    __tablename__ = "comparability_family"


class FamilyPublic(FamilyBase):
    """Indicators that look alike but stand on different bases, and why."""

    indicators: list[str] = Field(description="Codes of the indicators in this family.")


# ---------------------------------------------------------------- city


class CityBase(SQLModel):
    code: str = Field(primary_key=True, max_length=64, schema_extra={"examples": ["ningbo"]})
    name_zh: str = Field(max_length=64, schema_extra={"examples": ["宁波"]})
    name_en: str = Field(max_length=64, schema_extra={"examples": ["Ningbo"]})
    province_zh: str = Field(max_length=64, schema_extra={"examples": ["浙江"]})
    province_en: str = Field(max_length=64, schema_extra={"examples": ["Zhejiang"]})
    admin_level: AdminLevel = Field(
        sa_type=String(32),
        description="Administrative level: municipality, sub-provincial or prefecture.",
    )
    notes: str | None = Field(default=None, description="Why the city is in the data set.")


class City(CityBase, table=True):
    __table_args__ = (CheckConstraint(_in("admin_level", AdminLevel), name="admin_level"),)


class CityPublic(CityBase):
    """A city in the data set."""


# ---------------------------------------------------------------- source


class SourceBase(SQLModel):
    title: str = Field(schema_extra={"examples": ["刘尚海：发展新质生产力要多维协同发力"]})
    title_en: str
    publication: str = Field(description="Where it appeared, as far as the text shows.")
    reporter: str | None = None
    interviewee: str | None = None
    interviewee_title: str | None = None
    published_on: date | None = Field(
        default=None, description="Printed date; null if none is printed."
    )
    published_inferred: str | None = Field(
        default=None,
        max_length=32,
        description="Inferred date (YYYY or YYYY-MM) when none is printed.",
    )
    reference_year: int = Field(
        description="Year that undated ('as of the source') values stand for; used by latest."
    )
    provenance_note: str = Field(description="How the fields above were read or inferred.")
    url: str | None = None
    language: str = Field(default="zh", max_length=16)


class Source(SourceBase, table=True):
    id: int | None = Field(default=None, primary_key=True)


class SourcePublic(SourceBase):
    """A publication values were read from, with how its date and masthead were inferred."""

    id: int


# ---------------------------------------------------------------- indicator


class Basis(SQLModel):
    """What a value measures: numerator over denominator within a scope."""

    numerator: str = Field(schema_extra={"examples": ["Strategic-emerging-industry added value"]})
    denominator: str | None = Field(
        default=None,
        description="Null for counts, amounts and ranks.",
        schema_extra={"examples": ["GDP"]},
    )
    scope: str = Field(schema_extra={"examples": ["Whole city economy, calendar year"]})


class IndicatorBase(SQLModel):
    code: str = Field(
        primary_key=True, max_length=64, schema_extra={"examples": ["sei_va_share_gdp"]}
    )
    name_zh: str = Field(max_length=128)
    name_en: str = Field(max_length=128)
    definition: str
    dimension_code: str = Field(foreign_key="dimension.code", max_length=64, index=True)
    dimension_rationale: str = Field(
        description="Why the source's definitions put it in this dimension."
    )
    unit_code: str = Field(foreign_key="unit.code", max_length=64)
    family_code: str | None = Field(
        default=None, foreign_key="comparability_family.code", max_length=64, index=True
    )


class Indicator(IndicatorBase, table=True):
    numerator: str
    denominator: str | None = None
    scope: str


class IndicatorPublic(IndicatorBase):
    """What a value measures: definition, basis, unit, dimension and comparability family."""

    basis: Basis
    unit: UnitPublic
    family: FamilyPublic | None


# ---------------------------------------------------------------- observation


class ObservationBase(SQLModel):
    city_code: str = Field(
        foreign_key="city.code", max_length=64, schema_extra={"examples": ["shenzhen"]}
    )
    indicator_code: str = Field(
        foreign_key="indicator.code", max_length=64, schema_extra={"examples": ["sei_va_share_gdp"]}
    )
    period: int | None = Field(
        default=None,
        ge=1900,
        le=2200,
        description="Calendar year the value refers to; null when the source gives none, "
        "so the value stands as of the source.",
        schema_extra={"examples": [2023]},
    )
    value: float = Field(
        description="The number, in the indicator's unit (finite).",
        schema_extra={"examples": [41.9], "allow_inf_nan": False},
    )
    value_text: str = Field(
        description="The value as the source wrote it.", schema_extra={"examples": ["41.9%"]}
    )
    qualifier: Qualifier = Field(sa_type=String(16), description="How the value was stated.")
    is_derived: bool = Field(default=False, description="True if computed from other observations.")
    formula: str | None = Field(default=None, description="How a derived value was computed.")
    source_id: int = Field(foreign_key="source.id")
    quote: str = Field(description="The source's sentence, verbatim (line wraps joined).")
    note: str | None = Field(
        default=None, description="Curator's note, e.g. how the period was read."
    )


class Observation(ObservationBase, table=True):
    __table_args__ = (
        # One value per (city, indicator, period, source); a second index covers period IS NULL,
        # since SQL treats NULLs as distinct in unique constraints.
        Index(
            "uq_observation_key",
            "city_code",
            "indicator_code",
            "period",
            "source_id",
            unique=True,
        ),
        Index(
            "uq_observation_key_undated",
            "city_code",
            "indicator_code",
            "source_id",
            unique=True,
            sqlite_where=text("period IS NULL"),
            postgresql_where=text("period IS NULL"),
        ),
        Index("ix_observation_indicator_city", "indicator_code", "city_code"),
        CheckConstraint(_in("qualifier", Qualifier), name="qualifier"),
        CheckConstraint("period IS NULL OR period BETWEEN 1900 AND 2200", name="period"),
        CheckConstraint(
            "(is_derived AND formula IS NOT NULL) OR (NOT is_derived AND formula IS NULL)",
            name="derived_formula",
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    version: int = Field(
        default=1,
        sa_column_kwargs={"server_default": "1"},
        description="Bumped by every write; the number of the latest revision.",
    )
    deleted_at: datetime | None = Field(default=None, description="Set by a (soft) delete.")


class Derivation(SQLModel, table=True):
    """Links a derived observation to each observation it was computed from."""

    observation_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("observation.id", ondelete="CASCADE"), primary_key=True
        )
    )
    input_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("observation.id", ondelete="RESTRICT"), primary_key=True
        )
    )


class ObservationPublic(ObservationBase):
    """One value of one indicator for one city and period, with qualifier and provenance."""

    id: int
    version: int = Field(
        description="How many times the value has been written (1 = never corrected)."
    )
    unit_code: str = Field(
        description="The indicator's unit.", schema_extra={"examples": ["percent"]}
    )
    dimension_code: str = Field(schema_extra={"examples": ["new_industries"]})
    derived_from: list[int] = Field(
        description="Ids of the observations a derived value comes from."
    )


# ---------------------------------------------------------------- city industry


class CityIndustryBase(SQLModel):
    city_code: str = Field(foreign_key="city.code", max_length=64, index=True)
    role: IndustryRole = Field(sa_type=String(16))
    name_zh: str = Field(max_length=128)
    name_en: str = Field(max_length=128)
    since_year: int | None = Field(default=None, description="Year the city began building it.")
    source_id: int = Field(foreign_key="source.id")
    quote: str


class CityIndustry(CityIndustryBase, table=True):
    __tablename__ = "city_industry"
    __table_args__ = (
        Index("uq_city_industry_key", "city_code", "role", "name_zh", "source_id", unique=True),
        CheckConstraint(_in("role", IndustryRole), name="role"),
    )
    id: int | None = Field(default=None, primary_key=True)


class CityIndustryPublic(CityIndustryBase):
    """An industry the source names for a city (a qualitative fact, quoted)."""


# ---------------------------------------------------------------- composite views


class DimensionLatest(DimensionPublic):
    """A dimension with a city's latest values in it."""

    latest: list[ObservationPublic] = Field(
        description="Latest value per indicator in this dimension."
    )


class CityDetail(CityPublic):
    """A city with its latest value per indicator, grouped by dimension, and its named industries."""

    dimensions: list[DimensionLatest]
    industries: list[CityIndustryPublic] = Field(
        description="Industries the source names for the city (qualitative facts)."
    )


class IndicatorCoverage(SQLModel):
    """An indicator of a dimension and the cities that have data for it."""

    code: str
    name_zh: str
    name_en: str
    unit_code: str
    cities: list[str] = Field(description="Codes of the cities with data for this indicator.")


class DimensionDetail(DimensionPublic):
    """A dimension with its indicators and their city coverage."""

    indicators: list[IndicatorCoverage]


# ---------------------------------------------------------------- API keys, history and audit

# read: identifies a client (no writes); write: data writes; admin: writes and the audit log.
Scope = Literal["read", "write", "admin"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class ApiKey(SQLModel, table=True):
    """A curator's key. Only its SHA-256 hash is stored; `prefix` finds the row."""

    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint(_in("scope", Scope), name="scope"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    scope: str = Field(max_length=16)
    created_at: datetime
    revoked_at: datetime | None = None


class RevisionBase(SQLModel):
    observation_id: int = Field(foreign_key="observation.id", index=True)
    version: int = Field(description="1 for the first write, then +1 per write.")
    city_code: str = Field(max_length=64)
    indicator_code: str = Field(max_length=64)
    period: int | None = None
    value: float
    value_text: str
    qualifier: str = Field(max_length=16)
    is_derived: bool
    formula: str | None = None
    source_id: int
    quote: str
    note: str | None = None
    deleted: bool = Field(description="True for the revision a delete wrote.")
    changed_at: datetime = Field(description="When the write happened (UTC).")
    changed_by: str = Field(max_length=128, description="Name of the API key (or `seed`, `cli`).")
    reason: str = Field(description="Why the write was made, as the curator gave it.")


class ObservationRevision(RevisionBase, table=True):
    """A full copy of an observation after each write; nothing is ever overwritten here."""

    __tablename__ = "observation_revision"
    __table_args__ = (
        Index("uq_observation_revision_version", "observation_id", "version", unique=True),
        Index("ix_observation_revision_changed_at", "changed_at"),
    )
    id: int | None = Field(default=None, primary_key=True)


class RevisionPublic(RevisionBase):
    """One version of an observation, as it stood after one write."""


class AuditEventBase(SQLModel):
    at: datetime = Field(description="When (UTC).")
    actor: str = Field(max_length=128, description="API key name, or `seed` / `cli`.")
    action: str = Field(max_length=16, schema_extra={"examples": ["update"]})
    resource: str = Field(max_length=32, schema_extra={"examples": ["observation"]})
    resource_key: str = Field(max_length=256, schema_extra={"examples": ["25"]})
    changes: str = Field(description="What changed, as JSON: {field: [old, new]} or counts.")
    reason: str


class AuditEvent(AuditEventBase, table=True):
    """Every write, in order; its highest id is the data version behind ETags."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)


class AuditEventPublic(AuditEventBase):
    """One recorded write."""

    id: int


# ---------------------------------------------------------------- write models
# What clients may send. Server-owned fields (ids, versions, timestamps) are absent, and
# unknown fields are rejected, so no client can set them.

Code = Annotated[str, StringConstraints(pattern=CODE_PATTERN, max_length=64)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class WriteModel(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


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


class CityCreate(CityBase, WriteModel):
    """A new city."""

    code: Code = Field(schema_extra={"examples": ["suzhou"]})


class CityUpdate(UpdateModel):
    """Fields of a city to change (its code cannot change)."""

    nullable: ClassVar[frozenset[str]] = frozenset({"notes"})
    name_zh: Name | None = None
    name_en: Name | None = None
    province_zh: Name | None = None
    province_en: Name | None = None
    admin_level: AdminLevel | None = None
    notes: str | None = None


class IndicatorCreate(WriteModel):
    """A new indicator, with its basis, unit, dimension and optional comparability family."""

    code: Code = Field(schema_extra={"examples": ["rd_intensity"]})
    name_zh: str = Field(
        min_length=1, max_length=128, schema_extra={"examples": ["研发经费投入强度"]}
    )
    name_en: str = Field(min_length=1, max_length=128, schema_extra={"examples": ["R&D intensity"]})
    definition: str = Field(min_length=1)
    dimension_code: str = Field(max_length=64, schema_extra={"examples": ["new_drivers"]})
    dimension_rationale: str = Field(min_length=1)
    unit_code: str = Field(max_length=64, schema_extra={"examples": ["percent"]})
    family_code: str | None = Field(default=None, max_length=64)
    basis: Basis


class IndicatorUpdate(UpdateModel):
    """Fields of an indicator to change. Its unit cannot change once it has observations."""

    nullable: ClassVar[frozenset[str]] = frozenset({"family_code"})
    name_zh: str | None = Field(default=None, min_length=1, max_length=128)
    name_en: str | None = Field(default=None, min_length=1, max_length=128)
    definition: str | None = Field(default=None, min_length=1)
    dimension_code: str | None = Field(default=None, max_length=64)
    dimension_rationale: str | None = Field(default=None, min_length=1)
    unit_code: str | None = Field(default=None, max_length=64)
    family_code: str | None = Field(default=None, max_length=64)
    basis: Basis | None = None


class SourceCreate(SourceBase, WriteModel):
    """A new source."""


class SourceUpdate(UpdateModel):
    """Fields of a source to change."""

    nullable: ClassVar[frozenset[str]] = frozenset(
        {
            "reporter",
            "interviewee",
            "interviewee_title",
            "published_on",
            "published_inferred",
            "url",
        }
    )
    title: str | None = Field(default=None, min_length=1)
    title_en: str | None = Field(default=None, min_length=1)
    publication: str | None = Field(default=None, min_length=1)
    reporter: str | None = None
    interviewee: str | None = None
    interviewee_title: str | None = None
    published_on: date | None = None
    published_inferred: str | None = Field(default=None, max_length=32)
    reference_year: int | None = Field(default=None, ge=1900, le=2200)
    provenance_note: str | None = Field(default=None, min_length=1)
    url: str | None = None
    language: str | None = Field(default=None, max_length=16)


def check_derivation(
    is_derived: bool | None, formula: str | None, inputs: Sequence[object] | None
) -> None:
    if not (bool(is_derived) == (formula is not None) == bool(inputs)):
        raise ValueError(
            "a derived value needs is_derived=true, a formula and derived_from ids; other values none of them"
        )


class ObservationCreate(ObservationBase, WriteModel):
    """A new observation. `unit_code`, if sent, must be the indicator's unit."""

    derived_from: list[int] = Field(
        default=[], max_length=100, description="Ids of the input observations."
    )
    unit_code: str | None = Field(
        default=None, max_length=64, description="Optional check: the indicator's unit."
    )

    @model_validator(mode="after")
    def _derivation(self) -> "ObservationCreate":
        check_derivation(self.is_derived, self.formula, self.derived_from)
        return self


class ObservationUpdate(UpdateModel):
    """A correction. The old version stays in the history."""

    nullable: ClassVar[frozenset[str]] = frozenset({"period", "formula", "note"})
    period: int | None = Field(default=None, ge=1900, le=2200)
    value: float | None = Field(default=None, schema_extra={"allow_inf_nan": False})
    value_text: str | None = Field(default=None, min_length=1)
    qualifier: Qualifier | None = None
    is_derived: bool | None = None
    formula: str | None = None
    derived_from: list[int] | None = Field(default=None, max_length=100)
    source_id: int | None = Field(default=None, ge=1)
    quote: str | None = Field(default=None, min_length=1)
    note: str | None = None
    unit_code: str | None = Field(
        default=None, max_length=64, description="Optional check: the indicator's unit."
    )


class ImportReport(SQLModel):
    """What an import did, or (dry run) would do."""

    dry_run: bool
    rows: int = Field(description="Data rows in the file.")
    added: int
    updated: int
    unchanged: int
