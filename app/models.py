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
    name_zh: str = Field(
        max_length=64,
        description="Chinese name (中文名) of the unit.",
        schema_extra={"examples": ["百分比"]},
    )
    name_en: str = Field(
        max_length=64,
        description="English name of the unit.",
        schema_extra={"examples": ["percent"]},
    )
    symbol: str = Field(
        max_length=32,
        description="Symbol shown after a value.",
        schema_extra={"examples": ["%"]},
    )


class Unit(UnitBase, table=True):
    pass


class UnitPublic(UnitBase):
    """A unit of measure, e.g. percent or 亿元 (100 million yuan)."""


# ---------------------------------------------------------------- dimension


class DimensionBase(SQLModel):
    code: str = Field(
        primary_key=True,
        max_length=64,
        description="Dimension code.",
        schema_extra={"examples": ["new_industries"]},
    )
    position: int = Field(
        description="Order in which the source lists the dimension (1-4).",
        schema_extra={"examples": [2]},
    )
    name_zh: str = Field(
        max_length=64,
        description="Chinese name (中文名) of the dimension.",
        schema_extra={"examples": ["新产业"]},
    )
    name_en: str = Field(
        max_length=64,
        description="English name of the dimension.",
        schema_extra={"examples": ["New industries"]},
    )
    description_zh: str = Field(
        description="The source's own definition (中文原文), verbatim.",
        schema_extra={"examples": ["新产业是新质生产力的主阵地，……"]},
    )
    description_en: str = Field(
        description="An English rendering of the source's definition.",
        schema_extra={"examples": ["New industries are the main battlefield: ..."]},
    )


class Dimension(DimensionBase, table=True):
    pass


class DimensionPublic(DimensionBase):
    """One of the four 'new' dimensions, with the source's own definition."""


# ---------------------------------------------------------------- comparability family


class FamilyBase(SQLModel):
    code: str = Field(
        primary_key=True,
        max_length=64,
        description="Comparability family code.",
        schema_extra={"examples": ["sei_share"]},
    )
    name_zh: str = Field(
        max_length=128,
        description="Chinese name (中文名) of the family.",
        schema_extra={"examples": ["战略性新兴产业占比（口径各异）"]},
    )
    name_en: str = Field(
        max_length=128,
        description="English name of the family.",
        schema_extra={"examples": ["Strategic-emerging-industry share (different bases)"]},
    )
    note: str = Field(
        description="Why the members must not be ranked or compared as one series.",
        schema_extra={
            "examples": ["Shenzhen's 41.9% is SEI added value over GDP (the whole economy); ..."]
        },
    )


class ComparabilityFamily(FamilyBase, table=True):
    __tablename__ = "comparability_family"


class FamilyPublic(FamilyBase):
    """Indicators that look alike but stand on different bases, and why."""

    indicators: list[str] = Field(
        description="Codes of the indicators in this family.",
        schema_extra={
            "examples": [
                [
                    "sei_output_share_industrial_output",
                    "sei_va_share_gdp",
                    "sei_va_share_industrial_va",
                ]
            ]
        },
    )


# ---------------------------------------------------------------- city


class CityBase(SQLModel):
    code: str = Field(
        primary_key=True,
        max_length=64,
        description="City code (lower-case slug).",
        schema_extra={"examples": ["ningbo"]},
    )
    name_zh: str = Field(
        max_length=64, description="Chinese name (中文名).", schema_extra={"examples": ["宁波"]}
    )
    name_en: str = Field(
        max_length=64, description="English name.", schema_extra={"examples": ["Ningbo"]}
    )
    province_zh: str = Field(
        max_length=64,
        description="Province in Chinese (省份).",
        schema_extra={"examples": ["浙江"]},
    )
    province_en: str = Field(
        max_length=64, description="Province in English.", schema_extra={"examples": ["Zhejiang"]}
    )
    admin_level: AdminLevel = Field(
        sa_type=String(32),
        description="Administrative level: municipality, sub-provincial or prefecture.",
        schema_extra={"examples": ["sub_provincial"]},
    )
    notes: str | None = Field(
        default=None,
        description="Why the city is in the data set.",
        schema_extra={
            "examples": ["The source's home city (a separately planned city, 计划单列市)."]
        },
    )


class City(CityBase, table=True):
    __table_args__ = (CheckConstraint(_in("admin_level", AdminLevel), name="admin_level"),)


class CityPublic(CityBase):
    """A city in the data set."""


# ---------------------------------------------------------------- source


class SourceBase(SQLModel):
    title: str = Field(
        description="Title as printed (标题).",
        schema_extra={"examples": ["刘尚海：发展新质生产力要多维协同发力"]},
    )
    title_en: str = Field(
        description="English translation of the title.",
        schema_extra={
            "examples": [
                "Liu Shanghai: developing new quality productive forces needs coordinated effort "
                "on several fronts"
            ]
        },
    )
    publication: str = Field(
        description="Where it appeared, as far as the text shows.",
        schema_extra={"examples": ["甬派 / 宁波日报 (Ningbo Daily; inferred)"]},
    )
    reporter: str | None = Field(
        default=None,
        description="Reporter (记者) credited, if any.",
        schema_extra={"examples": ["殷聪"]},
    )
    interviewee: str | None = Field(
        default=None,
        description="Person interviewed, if any.",
        schema_extra={"examples": ["刘尚海"]},
    )
    interviewee_title: str | None = Field(
        default=None,
        description="The interviewee's position, as printed.",
        schema_extra={"examples": ["宁波市工业和智能经济研究院院长"]},
    )
    published_on: date | None = Field(
        default=None, description="Printed date; null if none is printed."
    )
    published_inferred: str | None = Field(
        default=None,
        max_length=32,
        description="Inferred date (YYYY or YYYY-MM) when none is printed.",
        schema_extra={"examples": ["2024-03"]},
    )
    reference_year: int = Field(
        description="Year that undated ('as of the source') values stand for; used by latest.",
        schema_extra={"examples": [2024]},
    )
    provenance_note: str = Field(
        description="How the fields above were read or inferred.",
        schema_extra={"examples": ["No date or masthead is printed. ..."]},
    )
    url: str | None = Field(default=None, description="Web address of the source, if known.")
    language: str = Field(
        default="zh",
        max_length=16,
        description="Language code of the source text.",
        schema_extra={"examples": ["zh"]},
    )


class Source(SourceBase, table=True):
    id: int | None = Field(default=None, primary_key=True)


class SourcePublic(SourceBase):
    """A publication values were read from, with how its date and masthead were inferred."""

    id: int = Field(description="Source id.", schema_extra={"examples": [1]})


# ---------------------------------------------------------------- indicator


class Basis(SQLModel):
    """What a value measures: numerator over denominator within a scope."""

    numerator: str = Field(
        description="What is counted or divided (分子).",
        schema_extra={"examples": ["Added value of strategic emerging industries"]},
    )
    denominator: str | None = Field(
        default=None,
        description="What it is divided by (分母); null for counts, amounts and ranks.",
        schema_extra={"examples": ["Gross domestic product (地区生产总值) of the city"]},
    )
    scope: str = Field(
        description="Population and time the value covers (口径).",
        schema_extra={"examples": ["City, whole economy; calendar year"]},
    )


class IndicatorBase(SQLModel):
    code: str = Field(
        primary_key=True,
        max_length=64,
        description="Indicator code.",
        schema_extra={"examples": ["sei_va_share_gdp"]},
    )
    name_zh: str = Field(
        max_length=128,
        description="Chinese name (中文名).",
        schema_extra={"examples": ["战略性新兴产业增加值占地区生产总值比重"]},
    )
    name_en: str = Field(
        max_length=128,
        description="English name.",
        schema_extra={"examples": ["Strategic-emerging-industry added value as a share of GDP"]},
    )
    definition: str = Field(
        description="What the indicator measures, in English.",
        schema_extra={"examples": ["SEI added value over the city's GDP."]},
    )
    dimension_code: str = Field(
        foreign_key="dimension.code",
        max_length=64,
        index=True,
        description="Code of the dimension it belongs to.",
        schema_extra={"examples": ["new_industries"]},
    )
    dimension_rationale: str = Field(
        description="Why the source's definitions put it in this dimension.",
        schema_extra={
            "examples": [
                "The weight of emerging industries in the economy is the structure the "
                "new-industries dimension seeks to upgrade."
            ]
        },
    )
    unit_code: str = Field(
        foreign_key="unit.code",
        max_length=64,
        description="Code of the unit its values are in.",
        schema_extra={"examples": ["percent"]},
    )
    family_code: str | None = Field(
        default=None,
        foreign_key="comparability_family.code",
        max_length=64,
        index=True,
        description="Comparability family (不可直接比较的同类指标), if any.",
        schema_extra={"examples": ["sei_share"]},
    )


class Indicator(IndicatorBase, table=True):
    numerator: str
    denominator: str | None = None
    scope: str


class IndicatorPublic(IndicatorBase):
    """What a value measures: definition, basis, unit, dimension and comparability family."""

    basis: Basis = Field(description="Numerator, denominator and scope (统计口径).")
    unit: UnitPublic = Field(description="The unit its values are in.")
    family: FamilyPublic | None = Field(
        description="Its comparability family, with the reason; null if none."
    )


# ---------------------------------------------------------------- observation


class ObservationBase(SQLModel):
    city_code: str = Field(
        foreign_key="city.code",
        max_length=64,
        description="Code of the city the value is for.",
        schema_extra={"examples": ["shenzhen"]},
    )
    indicator_code: str = Field(
        foreign_key="indicator.code",
        max_length=64,
        description="Code of the indicator measured.",
        schema_extra={"examples": ["sei_va_share_gdp"]},
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
    qualifier: Qualifier = Field(
        sa_type=String(16),
        description="How the value was stated, e.g. at_least for 以上, nearly for 近.",
        schema_extra={"examples": ["exact"]},
    )
    is_derived: bool = Field(
        default=False,
        description="True if computed from other observations.",
        schema_extra={"examples": [False]},
    )
    formula: str | None = Field(
        default=None,
        description="How a derived value was computed.",
        schema_extra={"examples": [FORMULA_EXAMPLE]},
    )
    source_id: int = Field(
        foreign_key="source.id",
        description="Id of the source the value was read from.",
        schema_extra={"examples": [1]},
    )
    quote: str = Field(
        description="The source's sentence, verbatim (line wraps joined).",
        schema_extra={"examples": [QUOTE_EXAMPLE]},
    )
    note: str | None = Field(
        default=None,
        description="Curator's note, e.g. how the period was read.",
        schema_extra={"examples": ["'Last year' (去年) read as 2023."]},
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

    id: int = Field(description="Observation id.", schema_extra={"examples": [12]})
    version: int = Field(
        description="How many times the value has been written (1 = never corrected).",
        schema_extra={"examples": [1]},
    )
    unit_code: str = Field(
        description="The indicator's unit.", schema_extra={"examples": ["percent"]}
    )
    dimension_code: str = Field(
        description="The indicator's dimension.", schema_extra={"examples": ["new_industries"]}
    )
    derived_from: list[int] = Field(
        description="Ids of the observations a derived value comes from.",
        schema_extra={"examples": [[23, 24]]},
    )


# ---------------------------------------------------------------- city industry


class CityIndustryBase(SQLModel):
    city_code: str = Field(
        foreign_key="city.code",
        max_length=64,
        index=True,
        description="Code of the city.",
        schema_extra={"examples": ["ningbo"]},
    )
    role: IndustryRole = Field(
        sa_type=String(16),
        description="Why it is named: emerging 新兴产业, future 未来产业, cluster, anchor or high_carbon.",
        schema_extra={"examples": ["anchor"]},
    )
    name_zh: str = Field(
        max_length=128,
        description="Industry name in Chinese (中文名), as the source writes it.",
        schema_extra={"examples": ["集成电路"]},
    )
    name_en: str = Field(
        max_length=128,
        description="English name of the industry.",
        schema_extra={"examples": ["Integrated circuits"]},
    )
    since_year: int | None = Field(
        default=None,
        description="Year the city began building it.",
        schema_extra={"examples": [2016]},
    )
    source_id: int = Field(
        foreign_key="source.id",
        description="Id of the source that names it.",
        schema_extra={"examples": [1]},
    )
    quote: str = Field(
        description="The source's words, verbatim.",
        schema_extra={"examples": ["从 2016 年起，宁波重点培育集成电路产业"]},
    )


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

    dimensions: list[DimensionLatest] = Field(
        description="The four dimensions, each with the city's latest values."
    )
    industries: list[CityIndustryPublic] = Field(
        description="Industries the source names for the city (qualitative facts)."
    )


class IndicatorCoverage(SQLModel):
    """An indicator of a dimension and the cities that have data for it."""

    code: str = Field(
        description="Indicator code.", schema_extra={"examples": ["sei_va_share_gdp"]}
    )
    name_zh: str = Field(
        description="Chinese name (中文名).",
        schema_extra={"examples": ["战略性新兴产业增加值占地区生产总值比重"]},
    )
    name_en: str = Field(
        description="English name.",
        schema_extra={"examples": ["Strategic-emerging-industry added value as a share of GDP"]},
    )
    unit_code: str = Field(description="Code of the unit.", schema_extra={"examples": ["percent"]})
    cities: list[str] = Field(
        description="Codes of the cities with data for this indicator.",
        schema_extra={"examples": [["shenzhen"]]},
    )


class DimensionDetail(DimensionPublic):
    """A dimension with its indicators and their city coverage."""

    indicators: list[IndicatorCoverage] = Field(
        description="The dimension's indicators, each with the cities that have data."
    )


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
    observation_id: int = Field(
        foreign_key="observation.id",
        index=True,
        description="Id of the observation this is a version of.",
        schema_extra={"examples": [12]},
    )
    version: int = Field(
        description="1 for the first write, then +1 per write.", schema_extra={"examples": [1]}
    )
    city_code: str = Field(
        max_length=64, description="City code, as written.", schema_extra={"examples": ["shenzhen"]}
    )
    indicator_code: str = Field(
        max_length=64,
        description="Indicator code, as written.",
        schema_extra={"examples": ["sei_va_share_gdp"]},
    )
    period: int | None = Field(
        default=None,
        description="Calendar year, as written; null means as of the source.",
        schema_extra={"examples": [2023]},
    )
    value: float = Field(
        description="The number in the indicator's unit, as written.",
        schema_extra={"examples": [41.9]},
    )
    value_text: str = Field(
        description="The value as the source wrote it.", schema_extra={"examples": ["41.9%"]}
    )
    qualifier: str = Field(
        max_length=16,
        description="How the value was stated (exact, more_than, at_least, ...).",
        schema_extra={"examples": ["exact"]},
    )
    is_derived: bool = Field(
        description="True if computed from other observations.", schema_extra={"examples": [False]}
    )
    formula: str | None = Field(
        default=None,
        description="How a derived value was computed.",
        schema_extra={"examples": [FORMULA_EXAMPLE]},
    )
    source_id: int = Field(description="Id of the source.", schema_extra={"examples": [1]})
    quote: str = Field(
        description="The source's sentence, verbatim.", schema_extra={"examples": [QUOTE_EXAMPLE]}
    )
    note: str | None = Field(
        default=None,
        description="Curator's note, as written.",
        schema_extra={"examples": ["'Last year' (去年) read as 2023."]},
    )
    deleted: bool = Field(
        description="True for the revision a delete wrote.", schema_extra={"examples": [False]}
    )
    changed_at: datetime = Field(
        description="When the write happened (UTC).",
        schema_extra={"examples": ["2024-04-02T08:30:00Z"]},
    )
    changed_by: str = Field(
        max_length=128,
        description="Name of the API key (or `seed`, `cli`).",
        schema_extra={"examples": ["seed"]},
    )
    reason: str = Field(
        description="Why the write was made, as the curator gave it.",
        schema_extra={"examples": ["python -m app seed"]},
    )


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
    at: datetime = Field(
        description="When (UTC).", schema_extra={"examples": ["2024-04-02T08:30:00Z"]}
    )
    actor: str = Field(
        max_length=128,
        description="API key name, or `seed` / `cli`.",
        schema_extra={"examples": ["seed"]},
    )
    action: str = Field(
        max_length=16,
        description="What was done: create, update, delete, import or seed.",
        schema_extra={"examples": ["update"]},
    )
    resource: str = Field(
        max_length=32,
        description="Kind of record written, e.g. observation or city.",
        schema_extra={"examples": ["observation"]},
    )
    resource_key: str = Field(
        max_length=256,
        description="Code or id of the record written (a file digest for imports).",
        schema_extra={"examples": ["25"]},
    )
    changes: str = Field(
        description="What changed, as JSON: {field: [old, new]} or counts.",
        schema_extra={"examples": ['{"value": [41.9, 42.0]}']},
    )
    reason: str = Field(
        description="Why the write was made, as the curator gave it.",
        schema_extra={"examples": ["corrected"]},
    )


class AuditEvent(AuditEventBase, table=True):
    """Every write, in order; its highest id is the data version behind ETags."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)


class AuditEventPublic(AuditEventBase):
    """One recorded write."""

    id: int = Field(
        description="Event id; increases with every write.", schema_extra={"examples": [1]}
    )


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

    code: Code = Field(
        description="City code: lower-case letters, digits and _, starting with a letter.",
        schema_extra={"examples": ["suzhou"]},
    )


class CityUpdate(UpdateModel):
    """Fields of a city to change (its code cannot change)."""

    nullable: ClassVar[frozenset[str]] = frozenset({"notes"})
    name_zh: Name | None = Field(
        default=None, description="Chinese name (中文名).", schema_extra={"examples": ["宁波"]}
    )
    name_en: Name | None = Field(
        default=None, description="English name.", schema_extra={"examples": ["Ningbo"]}
    )
    province_zh: Name | None = Field(
        default=None, description="Province in Chinese (省份).", schema_extra={"examples": ["浙江"]}
    )
    province_en: Name | None = Field(
        default=None, description="Province in English.", schema_extra={"examples": ["Zhejiang"]}
    )
    admin_level: AdminLevel | None = Field(
        default=None,
        description="Administrative level: municipality, sub-provincial or prefecture.",
        schema_extra={"examples": ["sub_provincial"]},
    )
    notes: str | None = Field(
        default=None,
        description="Why the city is in the data set; null clears it.",
        schema_extra={
            "examples": ["The source's home city (a separately planned city, 计划单列市)."]
        },
    )


class IndicatorCreate(WriteModel):
    """A new indicator, with its basis, unit, dimension and optional comparability family."""

    code: Code = Field(
        description="Indicator code: lower-case letters, digits and _, starting with a letter.",
        schema_extra={"examples": ["rd_intensity"]},
    )
    name_zh: str = Field(
        min_length=1,
        max_length=128,
        description="Chinese name (中文名).",
        schema_extra={"examples": ["研发经费投入强度"]},
    )
    name_en: str = Field(
        min_length=1,
        max_length=128,
        description="English name.",
        schema_extra={"examples": ["R&D intensity"]},
    )
    definition: str = Field(
        min_length=1,
        description="What the indicator measures, in English.",
        schema_extra={"examples": ["R&D spending over the city's GDP."]},
    )
    dimension_code: str = Field(
        max_length=64,
        description="Code of an existing dimension.",
        schema_extra={"examples": ["new_drivers"]},
    )
    dimension_rationale: str = Field(
        min_length=1,
        description="Why the source's definitions put it in this dimension.",
        schema_extra={"examples": ["R&D spending feeds technological innovation, the new driver."]},
    )
    unit_code: str = Field(
        max_length=64,
        description="Code of an existing unit.",
        schema_extra={"examples": ["percent"]},
    )
    family_code: str | None = Field(
        default=None,
        max_length=64,
        description="Code of an existing comparability family, if any.",
        schema_extra={"examples": ["sei_share"]},
    )
    basis: Basis = Field(description="Numerator, denominator and scope (统计口径).")


class IndicatorUpdate(UpdateModel):
    """Fields of an indicator to change. Its unit cannot change once it has observations."""

    nullable: ClassVar[frozenset[str]] = frozenset({"family_code"})
    name_zh: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Chinese name (中文名).",
        schema_extra={"examples": ["战略性新兴产业增加值占地区生产总值比重"]},
    )
    name_en: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="English name.",
        schema_extra={"examples": ["Strategic-emerging-industry added value as a share of GDP"]},
    )
    definition: str | None = Field(
        default=None,
        min_length=1,
        description="What the indicator measures, in English.",
        schema_extra={"examples": ["SEI added value over the city's GDP."]},
    )
    dimension_code: str | None = Field(
        default=None,
        max_length=64,
        description="Code of an existing dimension.",
        schema_extra={"examples": ["new_industries"]},
    )
    dimension_rationale: str | None = Field(
        default=None,
        min_length=1,
        description="Why the source's definitions put it in this dimension.",
        schema_extra={
            "examples": [
                "The weight of emerging industries in the economy is the structure the "
                "new-industries dimension seeks to upgrade."
            ]
        },
    )
    unit_code: str | None = Field(
        default=None,
        max_length=64,
        description="Code of an existing unit; only while the indicator has no observations.",
        schema_extra={"examples": ["percent"]},
    )
    family_code: str | None = Field(
        default=None,
        max_length=64,
        description="Code of an existing comparability family; null removes it from its family.",
        schema_extra={"examples": ["sei_share"]},
    )
    basis: Basis | None = Field(
        default=None, description="Numerator, denominator and scope (统计口径), replaced whole."
    )


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
    title: str | None = Field(
        default=None,
        min_length=1,
        description="Title as printed (标题).",
        schema_extra={"examples": ["刘尚海：发展新质生产力要多维协同发力"]},
    )
    title_en: str | None = Field(
        default=None,
        min_length=1,
        description="English translation of the title.",
        schema_extra={
            "examples": [
                "Liu Shanghai: developing new quality productive forces needs coordinated effort "
                "on several fronts"
            ]
        },
    )
    publication: str | None = Field(
        default=None,
        min_length=1,
        description="Where it appeared, as far as the text shows.",
        schema_extra={"examples": ["甬派 / 宁波日报 (Ningbo Daily; inferred)"]},
    )
    reporter: str | None = Field(
        default=None,
        description="Reporter (记者) credited, if any.",
        schema_extra={"examples": ["殷聪"]},
    )
    interviewee: str | None = Field(
        default=None,
        description="Person interviewed, if any.",
        schema_extra={"examples": ["刘尚海"]},
    )
    interviewee_title: str | None = Field(
        default=None,
        description="The interviewee's position, as printed.",
        schema_extra={"examples": ["宁波市工业和智能经济研究院院长"]},
    )
    published_on: date | None = Field(
        default=None, description="Printed date; null if none is printed."
    )
    published_inferred: str | None = Field(
        default=None,
        max_length=32,
        description="Inferred date (YYYY or YYYY-MM) when none is printed.",
        schema_extra={"examples": ["2024-03"]},
    )
    reference_year: int | None = Field(
        default=None,
        ge=1900,
        le=2200,
        description="Year that undated ('as of the source') values stand for.",
        schema_extra={"examples": [2024]},
    )
    provenance_note: str | None = Field(
        default=None,
        min_length=1,
        description="How the date and masthead were read or inferred.",
        schema_extra={"examples": ["No date or masthead is printed. ..."]},
    )
    url: str | None = Field(default=None, description="Web address of the source, if known.")
    language: str | None = Field(
        default=None,
        max_length=16,
        description="Language code of the source text.",
        schema_extra={"examples": ["zh"]},
    )


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
        default=[],
        max_length=100,
        description="Ids of the input observations (only for a derived value).",
        schema_extra={"examples": [[]]},
    )
    unit_code: str | None = Field(
        default=None,
        max_length=64,
        description="Optional check: the indicator's unit.",
        schema_extra={"examples": ["percent"]},
    )

    @model_validator(mode="after")
    def _derivation(self) -> "ObservationCreate":
        check_derivation(self.is_derived, self.formula, self.derived_from)
        return self


class ObservationUpdate(UpdateModel):
    """A correction. The old version stays in the history."""

    nullable: ClassVar[frozenset[str]] = frozenset({"period", "formula", "note"})
    period: int | None = Field(
        default=None,
        ge=1900,
        le=2200,
        description="Calendar year the value refers to; null means as of the source.",
        schema_extra={"examples": [2023]},
    )
    value: float | None = Field(
        default=None,
        description="The number, in the indicator's unit (finite).",
        schema_extra={"examples": [41.9], "allow_inf_nan": False},
    )
    value_text: str | None = Field(
        default=None,
        min_length=1,
        description="The value as the source wrote it.",
        schema_extra={"examples": ["41.9%"]},
    )
    qualifier: Qualifier | None = Field(
        default=None,
        description="How the value was stated, e.g. at_least for 以上, nearly for 近.",
        schema_extra={"examples": ["exact"]},
    )
    is_derived: bool | None = Field(
        default=None,
        description="True if computed from other observations.",
        schema_extra={"examples": [False]},
    )
    formula: str | None = Field(
        default=None,
        description="How a derived value was computed; null for a stated value.",
        schema_extra={"examples": [FORMULA_EXAMPLE]},
    )
    derived_from: list[int] | None = Field(
        default=None,
        max_length=100,
        description="Ids of the input observations of a derived value.",
        schema_extra={"examples": [[23, 24]]},
    )
    source_id: int | None = Field(
        default=None,
        ge=1,
        description="Id of the source the value was read from.",
        schema_extra={"examples": [1]},
    )
    quote: str | None = Field(
        default=None,
        min_length=1,
        description="The source's sentence, verbatim (line wraps joined).",
        schema_extra={"examples": [QUOTE_EXAMPLE]},
    )
    note: str | None = Field(
        default=None,
        description="Curator's note, e.g. how the period was read; null clears it.",
        schema_extra={"examples": ["'Last year' (去年) read as 2023."]},
    )
    unit_code: str | None = Field(
        default=None,
        max_length=64,
        description="Optional check: the indicator's unit.",
        schema_extra={"examples": ["percent"]},
    )


class ImportReport(SQLModel):
    """What an import did, or (dry run) would do."""

    dry_run: bool = Field(
        description="True if nothing was written (counts are what would happen).",
        schema_extra={"examples": [True]},
    )
    rows: int = Field(description="Data rows in the file.", schema_extra={"examples": [30]})
    added: int = Field(
        description="Rows that add a new observation.", schema_extra={"examples": [1]}
    )
    updated: int = Field(
        description="Rows that change an existing observation (a new version).",
        schema_extra={"examples": [2]},
    )
    unchanged: int = Field(
        description="Rows identical to the stored observation.", schema_extra={"examples": [27]}
    )
