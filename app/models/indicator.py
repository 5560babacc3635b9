"""What values measure: units, the four dimensions, comparability families and indicators
(with their basis), and the models curators write indicators with."""

from typing import ClassVar

from sqlmodel import Field, SQLModel

from app.models.base import (
    Code,
    UpdateModel,
    WriteModel,
)

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
