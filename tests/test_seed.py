"""Seeding is idempotent, and a bad seed row fails loudly, naming file and line, writing nothing."""

import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app.config import Settings
from app.db import make_engine, migrate
from app.seed import SeedError, is_empty, load_seed
from tests.conftest import SEED_DIR

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
