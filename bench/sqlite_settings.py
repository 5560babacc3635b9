"""The SQLite settings issue 4 names, measured on the benchmark's data through the app's own
engine, statements and import: `make bench-sqlite` (docs/performance.md, "SQLite settings").

- reads: the filtered page's statement as the app runs it on the event loop (BEGIN, the
  prepared JSON statement, ROLLBACK, on a connection made by the app's engine), over
  BENCH_SQLITE_PAGES pairs of the 1M file's 20,000 city + indicator pairs, in µs per page:
  as the app runs it, with a 64 MB page cache, with 1 GiB of mmap, and read-only
  (`query_only`, as the app's loop reader is). Each in a process of its own, twice, a warm-up
  pass and three timed ones each time; the best pass counts. Beside it, how much the
  process's RSS grew from before the connection was made to after the passes and one full
  scan of the observations, as an export makes: the page cache and mmapped pages count;
- writes: BENCH_SQLITE_WRITES one-row imports through the app's `apply_import`, each its own
  transaction, after 20 not counted, on a copy of the 10k file, in commits per second: WAL with synchronous=NORMAL
  (the app), WAL with FULL, and SQLite's defaults (a rollback journal with FULL);
- a reader beside a writer: pages read one after another on a copy of the 100k file while one
  import of 50,000 rows is written, in WAL and with a rollback journal: how many pages were
  read, the slowest, and how many waited over 100 ms.

It prints a table and writes bench/results/sqlite-settings-<timestamp>.json.
"""

import csv
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import Session

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))
import generate  # noqa: E402  (bench/generate.py)

from app.config import Settings  # noqa: E402
from app.db import make_engine  # noqa: E402
from app.imports import apply_import  # noqa: E402
from app.prepared import Prepared, prepared  # noqa: E402
from app.queries import ObservationFilter, observation_json_select  # noqa: E402

PAGES = int(os.environ.get("BENCH_SQLITE_PAGES", "5000"))
WRITES = int(os.environ.get("BENCH_SQLITE_WRITES", "200"))
WARMUP_WRITES = 20  # not counted: the first imports on a connection also warm its caches
BESIDE_ROWS = 50_000  # the import the reader runs beside: 25 new years for 2,000 pairs
SLOW_MS = 100.0

READS = {
    "as the app runs it": (),
    "64 MB page cache": ("PRAGMA cache_size=-65536",),
    "1 GiB mmap": ("PRAGMA mmap_size=1073741824",),
    "read-only (query_only)": ("PRAGMA query_only=ON",),
}
JOURNALS = {
    "WAL, synchronous=NORMAL (the app)": (),
    "WAL, synchronous=FULL": ("PRAGMA synchronous=FULL",),
    "rollback journal, synchronous=FULL (SQLite's defaults)": (
        "PRAGMA journal_mode=DELETE",
        "PRAGMA synchronous=FULL",
    ),
}


def engine_with(url: str, pragmas: tuple[str, ...], write: bool = False) -> Engine:
    """The app's engine for `url`, with `pragmas` run after the app's own on each connection."""
    settings = Settings(database_url=url, import_max_bytes=1 << 31, import_max_rows=1 << 20)
    engine = make_engine(settings, write=write)

    @event.listens_for(engine, "connect")
    def _after_the_apps(dbapi_connection: Any, _record: Any) -> None:
        for pragma in pragmas:
            dbapi_connection.execute(pragma)

    return engine


def page_statement(engine: Engine) -> Prepared:
    """The statement of the benchmark's filtered page (one city, one indicator, year_to)."""
    shape = ObservationFilter(cities=["x"], indicators=["y"], year_to=2024).shape()
    return prepared(engine.dialect, observation_json_select, (shape, False))


def page_params(city: int, indicator: int) -> dict[str, Any]:
    f = ObservationFilter(
        cities=[generate.city_code(city)],
        indicators=[generate.indicator_code(indicator)],
        year_to=2024,
    )
    return {**f.params(), "after": None, "limit": 51}


def read_page(cursor: Any, statement: Prepared, params: dict[str, Any]) -> int:
    cursor.execute("BEGIN")
    try:
        return len(statement.rows(cursor, params))
    finally:
        cursor.execute("ROLLBACK")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def reads(size: str) -> dict[str, Any]:
    """Each read connection in a process of its own, so that neither its timing nor its
    memory inherits another's; two rounds, each variant's best pass of both counts."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in READS}
    for _ in range(2):
        for name in READS:
            done = subprocess.run(
                [sys.executable, __file__, "--read", name, size],
                capture_output=True, text=True, check=True, timeout=600,
            )  # fmt: skip
            runs[name].append(json.loads(done.stdout))
    return {
        name: {
            "us_per_page": min(r["us_per_page"] for r in rounds),
            "rss_growth_mb": max(r["rss_growth_mb"] for r in rounds),
            "rounds": rounds,
        }
        for name, rounds in runs.items()
    }


def read_pages(name: str, size: str) -> dict[str, Any]:
    """The page statement over PAGES pairs on a read connection set up as READS[name]: a
    warm-up pass, then three timed ones; then one full scan of the observations. RSS growth
    is from before the connection was made to after the scan."""
    cities, indicators = generate.GRIDS[size]
    pairs = [(c, i) for c in range(cities) for i in range(indicators)]
    random.Random(1).shuffle(pairs)
    pairs = pairs[:PAGES]
    before = rss_mb()
    engine = engine_with(generate.sqlite_url(generate.db_path(size)), READS[name])
    fairy = engine.raw_connection()
    cursor = fairy.cursor()
    statement = page_statement(engine)
    passes = []
    for _ in range(4):
        started = time.perf_counter()
        for c, i in pairs:
            assert read_page(cursor, statement, page_params(c, i)) == 50
        passes.append((time.perf_counter() - started) / len(pairs) * 1e6)
    cursor.execute("SELECT max(length(quote) + length(value_text)) FROM observation")
    cursor.fetchall()
    grown = rss_mb() - before
    fairy.close()
    engine.dispose()
    return {
        "us_per_page": round(min(passes[1:]), 1),
        "passes_us": [round(p, 1) for p in passes[1:]],
        "rss_growth_mb": round(grown, 1),
    }


def import_csv(rows: list[tuple[int, int, int]], source_id: int) -> bytes:
    """An import of (city, indicator, year) rows, as generate.py writes its own."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(generate.IMPORT_COLUMNS)
    for c, i, year in rows:
        writer.writerow(generate.import_row(c, i, year, 12.5, "exact", source_id))
    return buffer.getvalue().encode()


def copy_of(size: str, folder: Path) -> str:
    target = folder / f"{size}.db"
    shutil.copyfile(generate.db_path(size), target)
    return generate.sqlite_url(target)


def imported(engine: Engine, data: bytes) -> int:
    settings = Settings(database_url=str(engine.url), import_max_bytes=1 << 31)
    with Session(engine, expire_on_commit=False) as session:
        report = apply_import(session, data, settings, "bench", "sqlite settings", False)
    return report.added


def source_id(size: str) -> int:
    """The synthetic source's id in the benchmark's file for `size`."""
    return int(str(generate.ensure(size)["source_id"]))


def journal_mode(connection: Any) -> str:
    return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def writes(folder: Path) -> dict[str, Any]:
    source = source_id("10k")
    out: dict[str, Any] = {}
    for name, pragmas in JOURNALS.items():
        engine = engine_with(copy_of("10k", folder), pragmas, write=True)
        # Rows of new years, one per import: 1900 on for the warm-up, 1925 on for the count.
        for n in range(WARMUP_WRITES):
            assert imported(engine, import_csv([(n % 20, n // 20 % 10, 1900)], source)) == 1
        started = time.perf_counter()
        for n in range(WRITES):
            row = (n % 20, n // 20 % 10, 1925 + n // 200)
            assert imported(engine, import_csv([row], source)) == 1
        seconds = time.perf_counter() - started
        fairy = engine.raw_connection()
        mode = journal_mode(fairy.dbapi_connection)
        fairy.close()
        out[name] = {"commits_per_s": round(WRITES / seconds, 1), "journal_mode": mode}
        engine.dispose()
    return out


BESIDE = (
    "WAL, synchronous=NORMAL (the app)",
    "rollback journal, synchronous=FULL (SQLite's defaults)",
)


def beside_a_writer(folder: Path) -> dict[str, Any]:
    source = source_id("100k")
    cities, indicators = generate.GRIDS["100k"]
    years = range(1975 - BESIDE_ROWS // (cities * indicators), 1975)
    data = import_csv([(c, i, y) for c in range(cities) for i in range(indicators) for y in years],
                      source)  # fmt: skip
    return {name: read_beside(copy_of("100k", folder), JOURNALS[name], data) for name in BESIDE}


def read_beside(url: str, pragmas: tuple[str, ...], data: bytes) -> dict[str, Any]:
    """Pages read one after another, each timed, for as long as `data` is being imported."""
    cities, indicators = generate.GRIDS["100k"]
    writer = engine_with(url, pragmas, write=True)
    reader = engine_with(url, pragmas)
    fairy = reader.raw_connection()
    # The writer's connection is made now, one at a time with the reader's, so that each can
    # switch the journal (the app's pragmas set WAL on every new connection).
    pooled = writer.raw_connection()
    modes = {journal_mode(fairy.dbapi_connection), journal_mode(pooled.dbapi_connection)}
    pooled.close()
    cursor = fairy.cursor()
    statement = page_statement(reader)
    added: list[int] = []
    thread = threading.Thread(target=lambda: added.append(imported(writer, data)))
    latencies: list[float] = []
    errors: list[str] = []
    rng = random.Random(2)
    started = time.perf_counter()
    thread.start()
    while thread.is_alive():
        began = time.perf_counter()
        try:
            params = page_params(rng.randrange(cities), rng.randrange(indicators))
            read_page(cursor, statement, params)
        except Exception as exc:  # a locked database, reported, not raised
            errors.append(f"{type(exc).__name__}: {exc}")
        latencies.append((time.perf_counter() - began) * 1000)
    thread.join()
    latencies.sort()
    fairy.close()
    reader.dispose()
    writer.dispose()
    return {
        "journal_mode": sorted(modes),
        "import_seconds": round(time.perf_counter() - started, 2),
        "rows_added": added[0] if added else 0,
        "pages_read": len(latencies),
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "max_ms": round(latencies[-1], 1),
        "over_100_ms": sum(1 for x in latencies if x > SLOW_MS),
        "errors": errors[:3],
        "error_count": len(errors),
    }


def main() -> None:
    for size in ("10k", "100k", "1m"):
        generate.ensure(size)
    results: dict[str, Any] = {"sqlite": sqlite3.sqlite_version}
    results["reads"] = reads("1m")
    with tempfile.TemporaryDirectory(prefix="xinzhi-sqlite-") as folder:
        results["writes"] = writes(Path(folder))
        results["beside_a_writer"] = beside_a_writer(Path(folder))
    print(f"SQLite {results['sqlite']}, the 1M file's page statement over {PAGES:,} pairs:\n")
    print("| read connection | µs per page (best pass) | RSS growth, MB |")
    print("|---|---:|---:|")
    for name, r in results["reads"].items():
        print(f"| {name} | {r['us_per_page']} | {r['rss_growth_mb']} |")
    print(f"\n{WRITES} one-row imports, each its own transaction (a copy of the 10k file):\n")
    print("| journal | commits/s |")
    print("|---|---:|")
    for name, r in results["writes"].items():
        print(f"| {name} | {r['commits_per_s']} |")
    print(f"\nPages read while {BESIDE_ROWS:,} rows are imported (a copy of the 100k file):\n")
    print("| journal | import s | pages read | p50 ms | max ms | over 100 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results["beside_a_writer"].items():
        print(
            f"| {name} | {r['import_seconds']} | {r['pages_read']:,} | {r['p50_ms']} | "
            f"{r['max_ms']} | {r['over_100_ms']} | {r['error_count']} |"
        )
    out = BENCH / "results" / time.strftime("sqlite-settings-%Y%m%dT%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\n{out.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--read"]:
        print(json.dumps(read_pages(sys.argv[2], sys.argv[3])))
    else:
        main()
