"""Observations, the links of derived ones to their inputs, their revisions, and the models
curators write them with."""

from datetime import datetime
from typing import Any, ClassVar

from pydantic import model_validator
from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, String, text
from sqlmodel import Field, SQLModel

from app.models.base import (
    DERIVATION_RULE,
    FORMULA_EXAMPLE,
    QUOTE_EXAMPLE,
    Qualifier,
    RowId,
    UpdateModel,
    WriteModel,
    check_derivation,
    derivation_rules,
    sql_in,
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
        CheckConstraint(sql_in("qualifier", Qualifier), name="qualifier"),
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


class ObservationCreate(ObservationBase, WriteModel):
    """A new observation. `unit_code`, if sent, must be the indicator's unit."""

    schema_rules: ClassVar[dict[str, Any]] = {
        **derivation_rules(required=True),
        "examples": [
            {
                "city_code": "shenzhen",
                "indicator_code": "sei_va_share_gdp",
                "period": 2024,
                "value": 42.5,
                "value_text": "42.5%",
                "qualifier": "exact",
                "source_id": 1,
                "quote": QUOTE_EXAMPLE,
                "unit_code": "percent",
            }
        ],
    }

    source_id: RowId = Field(
        description="Id of the source the value was read from.", schema_extra={"examples": [1]}
    )
    derived_from: list[RowId] = Field(
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
    schema_rules: ClassVar[dict[str, Any]] = {
        **derivation_rules(required=False),
        "examples": [{"value": 41.9, "value_text": "41.9%", "qualifier": "exact"}],
    }
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
    derived_from: list[RowId] | None = Field(
        default=None,
        max_length=100,
        description="Ids of the input observations of a derived value.",
        schema_extra={"examples": [[23, 24]]},
    )
    source_id: RowId | None = Field(
        default=None,
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

    @model_validator(mode="after")
    def _derivation(self) -> "ObservationUpdate":
        """The derivation fields sent agree with each other; with the stored ones, the write
        checks (a 409 if they do not)."""
        sent = self.model_fields_set
        claims = set()
        if "is_derived" in sent:
            claims.add(bool(self.is_derived))
        if "formula" in sent:
            claims.add(self.formula is not None)
        if "derived_from" in sent:
            claims.add(bool(self.derived_from))
        if len(claims) > 1:
            raise ValueError(DERIVATION_RULE)
        return self


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


def observation_key(city: str, indicator: str, period: int | None) -> str:
    """The natural key CSV files use to point at an observation: `city/indicator/period`."""
    return f"{city}/{indicator}/{'-' if period is None else period}"


def parse_observation_key(key: str) -> tuple[str, str, int | None]:
    """Inverse of observation_key; raises ValueError on a malformed key."""
    city, indicator, period = key.split("/")
    return city, indicator, None if period == "-" else int(period)
