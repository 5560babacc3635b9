"""The main queries use indexes, whatever the table size: asserted on SQLite's query plan, never
by timing."""

import pytest
from sqlalchemy import Select, func
from sqlalchemy.dialects import sqlite
from sqlmodel import Session, select

from app.config import Settings
from app.db import make_engine
from app.queries import ObservationFilter, observations_select


def plan(session: Session, stmt: Select) -> list[str]:  # type: ignore[type-arg]
    sql = str(stmt.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    return [row[3] for row in session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]


@pytest.mark.parametrize(
    ("filters", "indexes"),
    [
        (ObservationFilter(cities=["ningbo"]), ["uq_observation_key (city_code=?)"]),
        (
            ObservationFilter(cities=["ningbo"], indicators=["nev_output"]),
            [
                "ix_observation_indicator_city (indicator_code=? AND city_code=?)",
                "uq_observation_key (city_code=? AND indicator_code=?)",
            ],
        ),
        (
            ObservationFilter(indicators=["nev_output"]),
            ["ix_observation_indicator_city (indicator_code=?)"],
        ),
        (ObservationFilter(cities=["ningbo"], latest=True), ["uq_observation_key (city_code=?)"]),
    ],
)
def test_observation_queries_search_an_index(
    db_url: str, filters: ObservationFilter, indexes: list[str]
) -> None:
    engine = make_engine(Settings(database_url=db_url))
    stmt = observations_select(filters)
    page = stmt.order_by(stmt.selected_columns.id).limit(51)
    total = select(func.count()).select_from(stmt.order_by(None).subquery())
    try:
        with Session(engine) as session:
            for query in (page, total):
                steps = plan(session, query)
                observation_steps = [s for s in steps if " observation " in f" {s} "]
                assert observation_steps, steps
                assert all(s.startswith("SEARCH") for s in observation_steps), steps
                assert any(i in s for s in observation_steps for i in indexes), steps
    finally:
        engine.dispose()


def test_unfiltered_page_walks_the_primary_key(db_url: str) -> None:
    engine = make_engine(Settings(database_url=db_url))
    stmt = observations_select(ObservationFilter())
    page = stmt.where(stmt.selected_columns.id > 10).order_by(stmt.selected_columns.id).limit(51)
    try:
        with Session(engine) as session:
            steps = plan(session, page)
    finally:
        engine.dispose()
    assert any(
        s.startswith("SEARCH observation USING INTEGER PRIMARY KEY (rowid>?)") for s in steps
    ), steps
