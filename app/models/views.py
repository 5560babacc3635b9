"""Composite read views: a city with its latest values, a dimension with its coverage."""

from sqlmodel import Field, SQLModel

from app.models.city import CityIndustryPublic, CityPublic
from app.models.indicator import DimensionPublic
from app.models.observation import ObservationPublic

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
