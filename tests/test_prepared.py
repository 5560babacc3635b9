"""Prepared reads: one compiled statement per filter shape, with its parameters laid out the way
each driver takes them."""

from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite

from app.db import reading
from app.prepared import prepared
from app.queries import ObservationFilter, observation_json_select, observation_page_select

FILTERS = ObservationFilter(
    cities=["ningbo", "hefei"],
    indicators=["nev_output"],
    year_from=2020,
    latest=True,
    as_of=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
)


def test_a_shape_is_compiled_once() -> None:
    dialect = sqlite.dialect()
    other = ObservationFilter(
        cities=["shenzhen", "changzhou"],
        indicators=["ic_output"],
        year_from=1990,
        latest=True,
        as_of=datetime(2020, 1, 1, tzinfo=UTC),
    )
    assert other.shape() == FILTERS.shape()
    first = prepared(dialect, observation_page_select, (FILTERS.shape(), False))
    assert prepared(dialect, observation_page_select, (other.shape(), False)) is first
    assert prepared(dialect, observation_page_select, (FILTERS.shape(), True)) is not first


def test_sqlite_takes_positional_arguments_with_datetimes_as_text() -> None:
    statement = prepared(sqlite.dialect(), observation_page_select, (FILTERS.shape(), True))
    arguments = statement.arguments({**FILTERS.params(), "after": 7, "limit": 51})
    assert statement.positions is not None
    assert statement.sql.count("?") == len(arguments) == len(statement.positions)
    by_name = dict(zip(statement.positions, arguments, strict=True))
    assert by_name["after"] == 7 and by_name["limit"] == 51
    assert (by_name["city_0"], by_name["city_1"], by_name["indicator_0"]) == (
        "ningbo",
        "hefei",
        "nev_output",
    )
    assert by_name["year_from"] == 2020
    assert by_name["as_of"] == "2026-01-02 03:04:05.000000"  # as SQLAlchemy stores DateTime
    assert statement.booleans == (statement.columns.index("is_derived"),)


def test_the_page_json_statement_reads_its_flags_as_integers() -> None:
    """Its flags are only tested for truth: no row is copied to turn them into bools."""
    statement = prepared(sqlite.dialect(), observation_json_select, (FILTERS.shape(), False))
    assert statement.booleans == ()
    assert statement.columns[4:6] == ("is_derived", "printed")


@pytest.mark.parametrize("has_cursor", [False, True])
def test_postgresql_takes_named_arguments(has_cursor: bool) -> None:
    dialect = postgresql.psycopg.dialect()  # type: ignore[attr-defined]
    statement = prepared(dialect, observation_page_select, (FILTERS.shape(), has_cursor))
    arguments = statement.arguments({**FILTERS.params(), "after": 7, "limit": 51})
    assert statement.positions is None
    assert "%(city_0)s" in statement.sql and "%(city_1)s" in statement.sql
    assert ("%(after)s" in statement.sql) is has_cursor
    assert arguments["city_1"] == "hefei"
    assert arguments["as_of"] == FILTERS.as_of
    assert arguments["limit"] == 51


def test_a_read_sees_one_snapshot(app: FastAPI) -> None:
    """Every statement of one read (a page and its count, an export's batches and the cells
    fetched between them) sees the data as the first one saw it, not a write committed
    meanwhile. On PostgreSQL that takes REPEATABLE READ: a transaction alone would not do it
    (app/db.py, make_engine)."""
    notes = "SELECT notes FROM city WHERE code = 'ningbo'"
    with reading(app.state.engine) as reader:
        reader.cursor.execute(notes)
        first = reader.cursor.fetchone()[0]
        with app.state.write_engine.begin() as connection:
            connection.execute(text("UPDATE city SET notes = 'changed' WHERE code = 'ningbo'"))
        reader.cursor.execute(notes)
        again = reader.cursor.fetchone()[0]
    with reading(app.state.engine) as reader:
        reader.cursor.execute(notes)
        after = reader.cursor.fetchone()[0]
    assert first != "changed"
    assert (again, after) == (first, "changed")
