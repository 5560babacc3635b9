"""Cities, the industries a source names for them, and the models curators write cities with."""

from typing import ClassVar

from sqlalchemy import CheckConstraint, Index, String
from sqlmodel import Field, SQLModel

from app.models.base import (
    AdminLevel,
    Code,
    IndustryRole,
    Name,
    UpdateModel,
    WriteModel,
    sql_in,
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
    __table_args__ = (CheckConstraint(sql_in("admin_level", AdminLevel), name="admin_level"),)


class CityPublic(CityBase):
    """A city in the data set."""


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
        CheckConstraint(sql_in("role", IndustryRole), name="role"),
    )
    id: int | None = Field(default=None, primary_key=True)


class CityIndustryPublic(CityIndustryBase):
    """An industry the source names for a city (a qualitative fact, quoted)."""


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
