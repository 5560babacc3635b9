"""Synthetic benchmark data, made only through the app's command line.

    python bench/generate.py 10k [100k 1m]                  SQLite: bench/data/obs_<size>.db
    python bench/generate.py --postgres SERVER_URL 10k      PostgreSQL: database bench_<size>

Each database is built as a user would build it: `python -m app migrate`, `python -m app seed`
(the article's data), `python -m app seed --dir` a folder of synthetic cities, indicators and
one source, then `python -m app import` of the observations in CSV files of BENCH_CHUNK rows
(100,000). Every city + indicator pair has 50 yearly values (1975-2024), so the filtered page
`?city=X&indicator=Y&limit=50` returns 50 rows at every size. A SQLite file is built under a
temporary name and renamed when complete; a PostgreSQL database is kept as a `pg_dump -Fc`
archive in bench/data/ and restored from it on later runs.
"""

import argparse
import csv
import itertools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
VERSION = 2  # bump when the data below changes, so cached databases are rebuilt
YEARS = list(range(1975, 2025))
GRIDS = {"10k": (20, 10), "100k": (100, 20), "1m": (500, 40)}  # size -> (cities, indicators)
SOURCE_ID = 1000
PROVINCES = [("浙江", "Zhejiang"), ("广东", "Guangdong"), ("安徽", "Anhui"), ("江苏", "Jiangsu")]
IMPORT_COLUMNS = [
    "city_code", "indicator_code", "unit_code", "period", "value", "value_text",
    "qualifier", "is_derived", "source_id", "quote", "note",
]  # fmt: skip


def city_code(i: int) -> str:
    return f"bench_city_{i:04d}"


def indicator_code(i: int) -> str:
    return f"bench_ind_{i:03d}"


def grid(size: str) -> dict[str, object]:
    if size not in GRIDS:
        raise SystemExit(f"unknown size {size!r}; choose from {', '.join(GRIDS)}")
    n_cities, n_indicators = GRIDS[size]
    return {
        "size": size,
        "rows": n_cities * n_indicators * len(YEARS),
        "cities": [city_code(i) for i in range(n_cities)],
        "indicators": [indicator_code(i) for i in range(n_indicators)],
    }


def sqlite_path(size: str) -> Path:
    return DATA / f"obs_{size}_v{VERSION}.db"


def with_database(server_url: str, database: str) -> str:
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def libpq(url: str) -> str:
    """A SQLAlchemy URL as psql, pg_dump and pg_restore take it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def cli(url: str, *args: str, **env: str) -> str:
    """`python -m app ARGS` on the database at `url`; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning", **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"python -m app {' '.join(args[:2])} failed: {done.stderr[-2000:]}")
    return done.stdout


def _write(path: Path, header: list[str], rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header, restval="")
        writer.writeheader()
        writer.writerows(rows)


def seed_folder(size: str, folder: Path) -> None:
    """A seed folder: the real units, dimensions and families, synthetic cities, indicators
    and one source, and no observations."""
    n_cities, n_indicators = GRIDS[size]
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("units.csv", "dimensions.csv", "families.csv"):
        shutil.copy(ROOT / "seed" / name, folder / name)
    headers = {}
    for name in ("cities", "indicators", "sources", "observations", "city_industries"):
        with (ROOT / "seed" / f"{name}.csv").open(encoding="utf-8-sig") as f:
            headers[name] = next(csv.reader(f))
    with (ROOT / "seed" / "dimensions.csv").open(encoding="utf-8-sig") as f:
        dimensions = [row["code"] for row in csv.DictReader(f)]
    cities: list[dict[str, object]] = [
        {
            "code": city_code(i),
            "name_zh": f"合成城市{i:04d}",
            "name_en": f"Synthetic City {i:04d}",
            "province_zh": PROVINCES[i % len(PROVINCES)][0],
            "province_en": PROVINCES[i % len(PROVINCES)][1],
            "admin_level": "prefecture",
            "notes": "Synthetic benchmark data (bench/generate.py).",
        }
        for i in range(n_cities)
    ]
    indicators: list[dict[str, object]] = [
        {
            "code": indicator_code(i),
            "name_zh": f"合成指标{i:03d}",
            "name_en": f"Synthetic indicator {i:03d}",
            "dimension_code": dimensions[i % len(dimensions)],
            "unit_code": "percent" if i % 2 == 0 else "cny_100m",
            "numerator": "Synthetic numerator",
            "denominator": "Synthetic denominator" if i % 2 == 0 else "",
            "scope": "City; calendar year",
            "definition": "Synthetic benchmark indicator.",
            "dimension_rationale": "Spread evenly over the dimensions.",
        }
        for i in range(n_indicators)
    ]
    source: dict[str, object] = {
        "id": SOURCE_ID,
        "title": "合成基准数据",
        "title_en": "Synthetic benchmark data",
        "publication": "bench/generate.py",
        "reference_year": YEARS[-1],
        "provenance_note": f"Generated for the benchmark (version {VERSION}).",
        "language": "zh",
    }
    _write(folder / "cities.csv", headers["cities"], cities)
    _write(folder / "indicators.csv", headers["indicators"], indicators)
    _write(folder / "sources.csv", headers["sources"], [source])
    _write(folder / "observations.csv", headers["observations"], [])
    _write(folder / "city_industries.csv", headers["city_industries"], [])


def observation_rows(size: str) -> Iterator[list[object]]:
    """The synthetic observations in IMPORT_COLUMNS: even indicators are shares in percent,
    odd ones amounts in 100 million yuan."""
    n_cities, n_indicators = GRIDS[size]
    rng = random.Random(f"xinzhi-bench-{size}")
    qualifiers = ["exact"] * 7 + ["approximately", "more_than", "at_least"]
    for c in range(n_cities):
        for i in range(n_indicators):
            unit, symbol = ("percent", "%") if i % 2 == 0 else ("cny_100m", "亿元")
            for year in YEARS:
                value = round(rng.uniform(0.5, 99.5) if i % 2 == 0 else rng.uniform(1, 2e4), 2)
                quote = f"{year}年，合成城市{c:04d}的合成指标{i:03d}为{value:g}{symbol}。"
                yield [city_code(c), indicator_code(i), unit, year, value, f"{value:g}{symbol}",
                       rng.choice(qualifiers), "false", SOURCE_ID, quote, ""]  # fmt: skip


def build(url: str, size: str) -> dict[str, object]:
    """Fills the empty database at `url` through the command line; returns how long it took."""
    chunk = int(os.environ.get("BENCH_CHUNK", "100000"))
    work = DATA / f".work-{size}-{os.getpid()}"
    started = time.perf_counter()
    try:
        cli(url, "migrate")
        cli(url, "seed")
        seed_folder(size, work / "seed")
        cli(url, "seed", "--dir", str(work / "seed"))
        rows, done, imports = observation_rows(size), 0, []
        while True:
            part = work / "import.csv"
            with part.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(IMPORT_COLUMNS)
                count = 0
                for row in itertools.islice(rows, chunk):
                    writer.writerow(row)
                    count += 1
            if count == 0:
                break
            t = time.perf_counter()
            cli(url, "import", str(part), "--reason", "synthetic benchmark data", "--actor",
                "bench", IMPORT_MAX_ROWS=str(chunk + 1), IMPORT_MAX_BYTES=str(1 << 31))  # fmt: skip
            imports.append(round(time.perf_counter() - t, 1))
            done += count
            print(f"  {size}: imported {done:,} rows ({count / imports[-1]:,.0f} rows/s)",
                  file=sys.stderr, flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        **{k: v for k, v in grid(size).items() if k in ("size", "rows")},
        "version": VERSION,
        "build_seconds": round(time.perf_counter() - started, 1),
        "import_seconds": round(sum(imports), 1),
        "import_chunk_rows": chunk,
    }


def ensure_sqlite(size: str) -> dict[str, Any]:
    db = sqlite_path(size)
    meta = db.with_suffix(".json")
    if db.exists() and meta.exists():
        return {**json.loads(meta.read_text()), "url": f"sqlite:///{db}", "cached": True}
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(db.name + ".partial")
    for stale in DATA.glob(tmp.name + "*"):
        stale.unlink()
    info = build(f"sqlite:///{tmp}", size)
    conn = sqlite3.connect(tmp)  # fold the WAL into the file, so it is complete on its own
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.rename(db)
    meta.write_text(json.dumps(info, indent=2))
    return {**info, "url": f"sqlite:///{db}", "cached": False}


def server_sql(url: str, *statements: str) -> None:
    """Statements outside a transaction (CREATE DATABASE, VACUUM), on one connection."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            for sql in statements:
                conn.execute(text(sql))
    finally:
        engine.dispose()


def pg_tool(name: str, *args: str) -> None:
    bindir = subprocess.run(
        ["bash", "-c", "source .ci/postgres && pg_bindir"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run([str(Path(bindir) / name), *args], cwd=ROOT, check=True, capture_output=True)


def ensure_postgres(size: str, server_url: str) -> dict[str, Any]:
    """The database bench_<size> on the server, restored from its dump or built afresh."""
    name = f"bench_{size}_v{VERSION}"
    url = with_database(server_url, name)
    dump, meta = DATA / f"pg_{size}_v{VERSION}.dump", DATA / f"pg_{size}_v{VERSION}.json"
    server_sql(
        server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"
    )
    cached = dump.exists() and meta.exists()
    if cached:
        pg_tool("pg_restore", "--no-owner", "--exit-on-error", "-d", libpq(url), str(dump))
        info = json.loads(meta.read_text())
    else:
        DATA.mkdir(parents=True, exist_ok=True)
        info = build(url, size)
        pg_tool("pg_dump", "-Fc", "-f", str(dump) + ".partial", "-d", libpq(url))
        Path(str(dump) + ".partial").rename(dump)
        meta.write_text(json.dumps(info, indent=2))
    server_sql(url, "VACUUM (ANALYZE)")
    return {**info, "url": url, "cached": cached}


if __name__ == "__main__":
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--postgres", metavar="SERVER_URL", help="build on this PostgreSQL server")
    args.add_argument("sizes", nargs="*", default=["10k"])
    ns = args.parse_args()
    for size in ns.sizes:
        grid(size)
        built = ensure_postgres(size, ns.postgres) if ns.postgres else ensure_sqlite(size)
        print(json.dumps(built))
