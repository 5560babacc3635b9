"""Seeding is idempotent, and a bad seed row fails loudly, naming file and line, writing nothing."""

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text

from app.config import ROOT, Settings
from app.db import make_engine
from app.schema import migrate
from app.seed import SeedError, is_empty, load_seed
from tests.conftest import SEED_DIR, sqlite_only

TABLES = [
    "unit",
    "dimension",
    "comparability_family",
    "city",
    "source",
    "indicator",
    "observation",
    "derivation",
    "city_industry",
]


def snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1, 2"))]
            for t in TABLES
        }


@pytest.fixture
def empty_engine(empty_db_url: str) -> Engine:
    url = empty_db_url
    migrate(url)
    engine = make_engine(Settings(database_url=url))
    yield engine  # type: ignore[misc]
    engine.dispose()


def test_seeding_twice_leaves_the_same_rows(empty_engine: Engine) -> None:
    assert is_empty(empty_engine)
    first = load_seed(empty_engine, SEED_DIR)
    before = snapshot(empty_engine)
    second = load_seed(empty_engine, SEED_DIR)
    assert snapshot(empty_engine) == before
    assert {name: t.added for name, t in first.files.items()} == {
        "units.csv": 10,
        "dimensions.csv": 4,
        "families.csv": 3,
        "cities.csv": 5,
        "sources.csv": 1,
        "indicators.csv": 29,
        "observations.csv": 30,
        "city_industries.csv": 19,
    }
    assert second.changed == 0
    assert [len(before[t]) for t in TABLES] == [10, 4, 3, 5, 1, 29, 30, 2, 19]


def test_edited_seed_row_updates_in_place(empty_engine: Engine, tmp_path: Path) -> None:
    load_seed(empty_engine, SEED_DIR)
    seed = tmp_path / "seed"
    shutil.copytree(SEED_DIR, seed)
    path = seed / "observations.csv"
    path.write_text(
        path.read_text(encoding="utf-8").replace("41.9,41.9%", "42.0,42.0%"), encoding="utf-8"
    )
    report = load_seed(empty_engine, seed)
    assert (report.files["observations.csv"].updated, report.changed) == (1, 1)
    with empty_engine.connect() as conn:
        assert conn.execute(
            text(
                "SELECT count(*), max(value) FROM observation WHERE indicator_code = 'sei_va_share_gdp'"
            )
        ).one() == (1, 42.0)


BAD_ROWS = [
    (
        "observations.csv",
        "41.9,41.9%,exact",
        "41.9,41.9%,roughly",
        r"observations\.csv:13: qualifier: Input should be",
    ),
    (
        "observations.csv",
        "shenzhen,sei_va_share_gdp,percent",
        "shenzhen,sei_va_share_gdp,vehicles",
        r"observations\.csv:13: unit 'vehicles' does not match",
    ),
    (
        "observations.csv",
        "shenzhen,sei_va_share_gdp,",
        "atlantis,sei_va_share_gdp,",
        r"observations\.csv:13: unknown city 'atlantis'",
    ),
    (
        "observations.csv",
        "2023,41.9,",
        "year2023,41.9,",
        r"observations\.csv:13: period: Input should be a valid integer",
    ),
    (
        "observations.csv",
        "changzhou/nev_output/2023;",
        "changzhou/nev_output/2019;",
        r"observations\.csv:26: derived_from names 'changzhou/nev_output/2019'",
    ),
    (
        "indicators.csv",
        "nev_output,新能源汽车整车产量,New-energy-vehicle output,new_industries,vehicles",
        "nev_output,新能源汽车整车产量,New-energy-vehicle output,new_industries,cars",
        r"indicators\.csv:25: unknown unit 'cars'",
    ),
    (
        "cities.csv",
        "hefei,合肥,Hefei,安徽,Anhui,prefecture",
        "hefei,合肥,Hefei,安徽,Anhui,county",
        r"cities\.csv:4: admin_level: Input should be",
    ),
    (
        "city_industries.csv",
        "ningbo,future,石墨烯,Graphene,,1",
        "ningbo,future,石墨烯,Graphene,,7",
        r"city_industries\.csv:10: unknown source 7",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "message"), BAD_ROWS)
def test_bad_seed_row_fails_loudly_and_writes_nothing(
    empty_engine: Engine, tmp_path: Path, name: str, old: str, new: str, message: str
) -> None:
    seed = tmp_path / "seed"
    shutil.copytree(SEED_DIR, seed)
    path = seed / name
    content = path.read_text(encoding="utf-8")
    assert content.count(old) == 1
    path.write_text(content.replace(old, new), encoding="utf-8")
    with pytest.raises(SeedError, match=message):
        load_seed(empty_engine, seed)
    assert all(rows == [] for rows in snapshot(empty_engine).values())


@sqlite_only
def test_the_seed_command_waits_its_turn_behind_a_writer(db_url: str) -> None:
    """`python -m app seed` beside a running app takes SQLite's write lock before it reads,
    with BEGIN IMMEDIATE, as the app's writers do. With a deferred BEGIN it read, waited for
    the writer, then found the data moved on under its snapshot and failed
    (SQLITE_BUSY_SNAPSHOT, "database is locked")."""
    path = make_url(db_url).database
    assert path is not None
    notes = "SELECT code, notes FROM city WHERE code IN ('hefei', 'shenzhen') ORDER BY code"
    with sqlite3.connect(path) as connection:
        seeded = connection.execute(notes).fetchall()
        connection.execute("UPDATE city SET notes = 'drifted' WHERE code = 'hefei'")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE city SET notes = 'held' WHERE code = 'shenzhen'")
    seed = subprocess.Popen(
        [sys.executable, "-m", "app", "seed"],
        cwd=ROOT,
        env={"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # the seed has started, and waits for the writer
    writer.execute("COMMIT")
    writer.close()
    _, errors = seed.communicate(timeout=60)
    assert (seed.returncode, "Traceback" in errors) == (0, False), errors
    with sqlite3.connect(path) as connection:
        assert connection.execute(notes).fetchall() == seeded
