"""Sources: where values were published, and the models curators write them with."""

from datetime import date
from typing import ClassVar

from sqlmodel import Field, SQLModel

from app.models.base import (
    DateText,
    UpdateModel,
    WriteModel,
)

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


class SourceCreate(SourceBase, WriteModel):
    """A new source."""

    published_on: DateText | None = Field(
        default=None, description="Printed date; null if none is printed."
    )
    reference_year: int = Field(
        ge=1900,
        le=2200,
        description="Year that undated ('as of the source') values stand for; used by latest.",
        schema_extra={"examples": [2024]},
    )


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
    published_on: DateText | None = Field(
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
