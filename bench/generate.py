"""Synthetic benchmark data, made through the app's own models and import path.

    .venv/bin/python bench/generate.py 10k [100k 1m ...]
    .venv/bin/python bench/generate.py --postgres SERVER_URL 10k [100k 1m ...]

For each size, builds bench/data/obs_<size>_g<GENERATOR_VERSION>.db (reused if it exists):
`python -m app migrate` and `python -m app seed` (units, dimensions, the article's data), then
synthetic cities, indicators and one source through the app's SQLModel models, then every
observation through the app's `apply_import` (app.imports; app.writes before it moved there),
in chunks of BENCH_CHUNK rows (default 100,000). Rows are never written with raw SQL. A file is
built under a temporary name and renamed only when complete, so an interrupted run leaves no
half-built cache behind; a lock makes a second run wait for the first.

With --postgres (a SQLAlchemy URL to a PostgreSQL server's maintenance database, as
.ci/postgres's TEST_POSTGRES_URL), the data goes into the database bench_<size>_g<VERSION> on
that server, dropped and created afresh, by exactly the same path. The benchmark's server is
thrown away after each run, so the generated database is cached as a `pg_dump -Fc` archive,
bench/data/pg_<size>_g<VERSION>.dump (written under a temporary name, renamed when complete),
and later runs `pg_restore` it instead of generating again. Either way it ends with
VACUUM ANALYZE, so the planner has statistics and autovacuum has nothing left to do during a
measurement. The line printed per size includes the database's URL.

Every city + indicator pair has YEARS (50) yearly values, so the filtered page
`?city=X&indicator=Y&limit=50` returns 50 rows at every size.
"""

import argparse
import csv
import fcntl
import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "bench" / "data"

GENERATOR_VERSION = 1  # bump when the data below changes, so cached files are rebuilt
YEARS = list(range(1975, 2025))  # 50 periods per city + indicator
# size -> (cities, indicators); cities * indicators * 50 = size
GRIDS = {
    "1k": (5, 4),
    "10k": (20, 10),
    "100k": (100, 20),
    "1m": (500, 40),
}
PROVINCES = [
    ("浙江", "Zhejiang"),
    ("广东", "Guangdong"),
    ("安徽", "Anhui"),
    ("江苏", "Jiangsu"),
    ("山东", "Shandong"),
    ("四川", "Sichuan"),
    ("湖北", "Hubei"),
    ("河南", "Henan"),
    ("福建", "Fujian"),
    ("湖南", "Hunan"),
]
IMPORT_COLUMNS = [
    "city_code",
    "indicator_code",
    "unit_code",
    "period",
    "value",
    "value_text",
    "qualifier",
    "is_derived",
    "source_id",
    "quote",
    "note",
]


def size_key(text: str) -> str:
    key = text.strip().lower()
    if key not in GRIDS:
        raise SystemExit(f"unknown size {text!r}; choose from {', '.join(GRIDS)}")
    return key


def db_path(size: str) -> Path:
    return DATA / f"obs_{size}_g{GENERATOR_VERSION}.db"


def sqlite_url(db: Path) -> str:
    return f"sqlite:///{db}"


def pg_database(size: str) -> str:
    return f"bench_{size}_g{GENERATOR_VERSION}"


def pg_dump_path(size: str) -> Path:
    return DATA / f"pg_{size}_g{GENERATOR_VERSION}.dump"


def pg_url(server_url: str, database: str) -> str:
    """`server_url` (SQLAlchemy, postgresql+psycopg://...) pointed at another database."""
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same URL as libpq's tools (psql, pg_dump, pg_restore) take it."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_bindir() -> Path:
    """The folder of the PostgreSQL binaries .ci/postgres starts its server from; pg_dump,
    pg_restore and psql there match that server's version."""
    done = subprocess.run(
        ["bash", "-c", "source .ci/postgres && pg_bindir"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit("no PostgreSQL binaries found (.ci/postgres pg_bindir)")
    return Path(done.stdout.strip())


def city_code(i: int) -> str:
    return f"bench_city_{i:04d}"


def indicator_code(i: int) -> str:
    return f"bench_ind_{i:03d}"


def grid(size: str) -> dict[str, object]:
    """What the benchmark needs to know about a file: its codes and shape."""
    n_cities, n_indicators = GRIDS[size]
    return {
        "size": size,
        "rows": n_cities * n_indicators * len(YEARS),
        "cities": [city_code(i) for i in range(n_cities)],
        "indicators": [indicator_code(i) for i in range(n_indicators)],
        "years": [YEARS[0], YEARS[-1]],
    }


def _app(url: str, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"}
    subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, check=True)


def _reference_rows(url: str, size: str) -> int:
    """Cities, indicators and a source for the synthetic data, via the app's models."""
    from sqlmodel import Session, col, select

    from app.config import Settings
    from app.db import make_engine
    from app.models import City, Dimension, Indicator, Source

    n_cities, n_indicators = GRIDS[size]
    engine = make_engine(Settings(database_url=url), write=True)
    with Session(engine) as session:
        dimensions = [
            d.code for d in session.exec(select(Dimension).order_by(col(Dimension.position)))
        ]
        for i in range(n_cities):
            zh, en = PROVINCES[i % len(PROVINCES)]
            session.add(
                City(
                    code=city_code(i),
                    name_zh=f"合成城市{i:04d}",
                    name_en=f"Synthetic City {i:04d}",
                    province_zh=zh,
                    province_en=en,
                    admin_level="prefecture",
                    notes="Synthetic benchmark data (bench/generate.py).",
                )
            )
        for i in range(n_indicators):
            percent = i % 2 == 0
            session.add(
                Indicator(
                    code=indicator_code(i),
                    name_zh=f"合成指标{i:03d}",
                    name_en=f"Synthetic indicator {i:03d}",
                    definition="Synthetic benchmark indicator.",
                    dimension_code=dimensions[i % len(dimensions)],
                    dimension_rationale="Spread evenly over the four dimensions.",
                    unit_code="percent" if percent else "cny_100m",
                    numerator="Synthetic numerator",
                    denominator="Synthetic denominator" if percent else None,
                    scope="City; calendar year",
                )
            )
        source = Source(
            title="合成基准数据",
            title_en="Synthetic benchmark data",
            publication="bench/generate.py",
            reference_year=YEARS[-1],
            provenance_note=f"Generated for the benchmark (generator version {GENERATOR_VERSION}).",
        )
        session.add(source)
        session.commit()
        assert source.id is not None
        source_id = source.id
    engine.dispose()
    return source_id


def import_row(
    city: int, indicator: int, year: int, value: float, qualifier: str, source_id: int
) -> list[object]:
    """One synthetic observation in IMPORT_COLUMNS: even indicators are shares in percent,
    odd ones amounts in 100 million yuan."""
    unit, symbol = ("percent", "%") if indicator % 2 == 0 else ("cny_100m", "亿元")
    text = f"{value:g}{symbol}"
    quote = f"{year}年，合成城市{city:04d}的合成指标{indicator:03d}为{text}。"
    return [
        city_code(city),
        indicator_code(indicator),
        unit,
        year,
        value,
        text,
        qualifier,
        "false",
        source_id,
        quote,
        "",
    ]


def _csv_chunks(size: str, source_id: int, chunk: int):  # type: ignore[no-untyped-def]
    """CSV files in the columns of /observations.csv, `chunk` rows each."""
    n_cities, n_indicators = GRIDS[size]
    rng = random.Random(f"xinzhi-bench-{size}")
    qualifiers = ["exact"] * 7 + ["approximately", "more_than", "at_least"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    count = 0

    def start() -> None:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(IMPORT_COLUMNS)

    start()
    for c in range(n_cities):
        for i in range(n_indicators):
            percent = i % 2 == 0
            for year in YEARS:
                value = round(rng.uniform(0.5, 99.5) if percent else rng.uniform(1, 20000), 2)
                writer.writerow(import_row(c, i, year, value, rng.choice(qualifiers), source_id))
                count += 1
                if count % chunk == 0:
                    yield buffer.getvalue().encode()
                    start()
    if count % chunk:
        yield buffer.getvalue().encode()


def _import(url: str, size: str, source_id: int, chunk: int) -> list[float]:
    from sqlmodel import Session

    from app.config import Settings
    from app.db import make_engine

    try:
        from app.imports import apply_import  # where the set-wise import lives now
    except ImportError:
        from app.writes import apply_import  # type: ignore[no-redef,attr-defined]

    settings = Settings(
        database_url=url,
        import_max_bytes=1 << 31,
        import_max_rows=chunk + 1,
    )
    engine = make_engine(settings, write=True)
    seconds: list[float] = []
    done = 0
    total = grid(size)["rows"]
    for data in _csv_chunks(size, source_id, chunk):
        started = time.perf_counter()
        with Session(engine, expire_on_commit=False) as session:
            report = apply_import(
                session, data, settings, "bench", "synthetic benchmark data", False
            )
        seconds.append(time.perf_counter() - started)
        done += report.added
        rate = report.rows / seconds[-1]
        print(
            f"  {size}: imported {done:,}/{total:,} rows "
            f"({seconds[-1]:.1f} s for this chunk, {rate:,.0f} rows/s)",
            file=sys.stderr,
            flush=True,
        )
    engine.dispose()
    return seconds


def ensure(size: str) -> dict[str, object]:
    """The file for `size`, built if missing; returns its metadata (with generation time)."""
    size = size_key(size)
    DATA.mkdir(parents=True, exist_ok=True)
    with open(DATA / f".{size}.lock", "w") as lock:  # a second run waits for the first
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure(size)


def _build(url: str, size: str, label: str) -> dict[str, object]:
    """Fills an empty database through the app (migrate, seed, models, apply_import); returns
    the metadata both backends record."""
    chunk = int(os.environ.get("BENCH_CHUNK", "100000"))
    print(f"generating {size} observations into {label} (chunks of {chunk:,})", file=sys.stderr)
    started = time.perf_counter()
    _app(url, "migrate")
    _app(url, "seed")
    source_id = _reference_rows(url, size)
    chunks = _import(url, size, source_id, chunk)
    return {
        **grid(size),
        "generator_version": GENERATOR_VERSION,
        "generation_seconds": round(time.perf_counter() - started, 1),
        "import_seconds": round(sum(chunks), 1),
        "import_chunk_rows": chunk,
        "import_chunk_seconds": [round(s, 1) for s in chunks],
        "source_id": source_id,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _ensure(size: str) -> dict[str, object]:
    db = db_path(size)
    meta_path = db.with_suffix(".json")
    if db.exists() and meta_path.exists():
        return {**json.loads(meta_path.read_text()), "cached": True}
    tmp = db.with_name(db.name + ".partial")
    for stale in DATA.glob(tmp.name + "*"):
        stale.unlink()
    meta = _build(sqlite_url(tmp), size, db.name)
    with sqlite3.connect(tmp) as conn:  # fold the WAL back in, then the file is complete
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    meta["file_bytes"] = tmp.stat().st_size
    for suffix in ("-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    tmp.rename(db)
    meta_path.write_text(json.dumps(meta, indent=2))
    print(f"generated {size} in {meta['generation_seconds']:.0f} s", file=sys.stderr)
    return {**meta, "cached": False}


# ---------------------------------------------------------------- PostgreSQL


def _server_sql(server_url: str, *statements: str) -> None:
    """Statements outside a transaction (CREATE DATABASE, VACUUM), one connection."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            for sql in statements:
                conn.execute(text(sql))
    finally:
        engine.dispose()


def _tool(name: str, *args: str) -> None:
    cmd = [str(pg_bindir() / name), *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def ensure_postgres(size: str, server_url: str) -> dict[str, object]:
    """The database for `size` on the server at `server_url`: restored from the cached dump,
    or generated (and the dump written); then VACUUM ANALYZE. Returns its metadata."""
    size = size_key(size)
    DATA.mkdir(parents=True, exist_ok=True)
    with open(DATA / f".pg_{size}.lock", "w") as lock:  # a second run waits for the first
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_postgres(size, server_url)


def _ensure_postgres(size: str, server_url: str) -> dict[str, object]:
    name = pg_database(size)
    url = pg_url(server_url, name)
    dump = pg_dump_path(size)
    meta_path = dump.with_suffix(".json")
    _server_sql(
        server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"
    )
    cached = dump.exists() and meta_path.exists()
    started = time.perf_counter()
    if cached:
        print(f"restoring {size} into {name} from {dump.name}", file=sys.stderr)
        # as the dump was taken: same owner (the server's user), same schema
        _tool("pg_restore", "--no-owner", "--exit-on-error", "-d", libpq_url(url), str(dump))
        meta = json.loads(meta_path.read_text())
        meta["restore_seconds"] = round(time.perf_counter() - started, 1)
    else:
        meta = _build(url, size, name)
        dumped = time.perf_counter()
        tmp = dump.with_name(dump.name + ".partial")
        tmp.unlink(missing_ok=True)
        _tool("pg_dump", "-Fc", "-f", str(tmp), "-d", libpq_url(url))
        meta["dump_seconds"] = round(time.perf_counter() - dumped, 1)
        meta["dump_bytes"] = tmp.stat().st_size
        tmp.rename(dump)
        meta_path.write_text(json.dumps(meta, indent=2))
        generated = meta["generation_seconds"]
        print(f"generated {size} in {generated:.0f} s; cached as {dump.name}", file=sys.stderr)
    analyzed = time.perf_counter()
    _server_sql(url, "VACUUM (ANALYZE)")
    meta["vacuum_analyze_seconds"] = round(time.perf_counter() - analyzed, 1)
    try:  # write the load out now rather than during a measurement (needs superuser)
        _server_sql(url, "CHECKPOINT")
    except Exception as exc:
        print(f"CHECKPOINT skipped: {str(exc).splitlines()[0]}", file=sys.stderr)
    return {**meta, "database": name, "url": url, "cached": cached}


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--postgres", metavar="SERVER_URL", help="build on this PostgreSQL server")
    cli.add_argument("sizes", nargs="*", default=["10k"])
    args = cli.parse_args()
    for arg in args.sizes:
        meta = ensure_postgres(arg, args.postgres) if args.postgres else ensure(arg)
        print(json.dumps({k: v for k, v in meta.items() if k not in ("cities", "indicators")}))
