"""The main queries use indexes, whatever the table size: asserted on SQLite's query plan, never
by timing. (PostgreSQL's planner rightly scans tables this small, so its plans would prove
nothing here; the benchmark covers it at size.)"""

from typing import Any

import pytest
from sqlalchemy import Select
from sqlmodel import Session

from app.config import Settings
from app.db import make_engine
from app.queries import (
    ObservationFilter,
    coverage_select,
    observation_count_select,
    observation_page_select,
)
from tests.conftest import sqlite_only

pytestmark = sqlite_only


def plan(session: Session, statement: Select[Any]) -> list[str]:
    """The plan of the SQL the API runs, with its parameters."""
    connection = session.connection()
    compiled = statement.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    sql = "EXPLAIN QUERY PLAN " + compiled.string
    rows = connection.exec_driver_sql(
        sql, tuple(compiled.params[n] for n in compiled.positiontup or ())
    )
    return [row[3] for row in rows]


@pytest.mark.parametrize(
    ("filters", "indexes"),
    [
        (ObservationFilter(cities=["ningbo"]), ["uq_observation_key (city_code=?"]),
        (
            ObservationFilter(cities=["ningbo"], indicators=["nev_output"]),
            [
                "ix_observation_indicator_city (indicator_code=? AND city_code=?",
                "uq_observation_key (city_code=? AND indicator_code=?",
            ],
        ),
        (
            ObservationFilter(indicators=["nev_output"]),
            ["ix_observation_indicator_city (indicator_code=?"],
        ),
        (ObservationFilter(cities=["ningbo"], latest=True), ["uq_observation_key (city_code=?"]),
    ],
)
def test_observation_queries_search_an_index(
    db_url: str, filters: ObservationFilter, indexes: list[str]
) -> None:
    engine = make_engine(Settings(database_url=db_url))
    statements = [
        observation_page_select(filters, None, 51),
        observation_page_select(filters, 10, 51),
        observation_count_select(filters),
    ]
    try:
        with Session(engine) as session:
            for statement in statements:
                steps = plan(session, statement)
                observation_steps = [s for s in steps if " observation " in f" {s} "]
                assert observation_steps, steps
                assert all(s.startswith("SEARCH") for s in observation_steps), steps
                assert any(i in s for s in observation_steps for i in indexes), steps
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "filters",
    [
        ObservationFilter(cities=["ningbo"], indicators=["nev_output"]),
        ObservationFilter(cities=["ningbo"], indicators=["nev_output"], year_to=2024),
        ObservationFilter(cities=["ningbo"], indicators=["nev_output"], year_from=2020),
        ObservationFilter(
            cities=["ningbo"], indicators=["nev_output"], year_from=2020, year_to=2024
        ),
    ],
)
@pytest.mark.parametrize("after", [False, True])
def test_one_city_and_indicator_page_reads_in_id_order(
    db_url: str, filters: ObservationFilter, after: bool
) -> None:
    """One city and one indicator, with or without years: the index's entries come in id
    order, so the page is read without sorting and stops at its last row."""
    engine = make_engine(Settings(database_url=db_url))
    page = observation_page_select(filters, 10 if after else None, 51)
    try:
        with Session(engine) as session:
            steps = plan(session, page)
    finally:
        engine.dispose()
    keys = "indicator_code=? AND city_code=?" + (" AND rowid>?" if after else "")
    search = f"SEARCH observation USING INDEX ix_observation_indicator_city ({keys})"
    assert [s for s in steps if " observation " in f" {s} "] == [search], steps
    assert not [s for s in steps if "TEMP B-TREE" in s], steps


def test_unfiltered_page_walks_the_primary_key(db_url: str) -> None:
    engine = make_engine(Settings(database_url=db_url))
    page = observation_page_select(ObservationFilter(), 10, 51)
    try:
        with Session(engine) as session:
            steps = plan(session, page)
    finally:
        engine.dispose()
    assert any(
        s.startswith("SEARCH observation USING INTEGER PRIMARY KEY (rowid>?)") for s in steps
    ), steps


def test_dimension_coverage_probes_the_index_per_indicator_and_city(db_url: str) -> None:
    """Which cities have data for which of a dimension's indicators: one indexed probe per
    pair, never a scan of the dimension's observations."""
    engine = make_engine(Settings(database_url=db_url))
    try:
        with Session(engine) as session:
            steps = plan(session, coverage_select("new_industries"))
    finally:
        engine.dispose()
    [probe] = [s for s in steps if " observation " in f" {s} "]
    assert probe.startswith("SEARCH observation USING INDEX"), steps
    assert "city_code=?" in probe and "indicator_code=?" in probe, steps
