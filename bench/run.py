"""The benchmark behind `make bench` (docs/performance.md): the issue's goals, each as a ratio
against a reference measured in the same run, on the same machine.

For each size (BENCH_SIZES, default 10k,1m) it builds or reuses a synthetic database
(bench/generate.py, through the app's command line), serves it with `python -m app serve` (one
uvicorn worker) and drives it with wrk over HTTP:

- start: spawn to first answer of a filtered page (best of BENCH_START_RUNS, 3);
- page: 20,000 distinct filtered-page URLs, 64 connections; Datasette on the same file;
- cached page: the first 1,000 of those URLs, each asked once first, then again and again;
  a Starlette hello-world;
- CSV export: `/observations.csv` in full, with the server's RSS growth; Datasette's CSV and
  the sqlite3 CLI's dump (PostgreSQL: psql's COPY) of the same table;
- writes (SQLite, on a copy of the file): PATCH of an observation's note with a curator key
  from `python -m app keys create`, by one client in sequence and by 32 at once;
- mixed load (once per run): `make load`'s SQLite run (bench/load.py), BENCH_LOAD_SECONDS.

BENCH_BACKENDS=sqlite,postgresql adds PostgreSQL (page, cached page, CSV against psql COPY,
start), on BENCH_POSTGRES_URL's server or a throwaway one from .ci/postgres. Each run writes
bench/results/<UTC timestamp>.json: machine, git describe, every measure and every goal;
BENCH_LABEL names the run in it. Server logs go to bench/logs/.

Knobs: BENCH_SIZES, BENCH_BACKENDS, BENCH_SECONDS (10 per measured run), BENCH_WARMUP (2),
BENCH_CONNECTIONS (64), BENCH_THREADS (wrk threads, 2), BENCH_LOAD_SECONDS (30; 0 skips),
BENCH_REF_VENV (Datasette's virtualenv, built by `make bench`), BENCH_LABEL.
"""

import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import generate  # noqa: E402

PYTHON = sys.executable
RESULTS, LOGS = BENCH / "results", BENCH / "logs"
DATASETTE = Path(os.environ.get("BENCH_REF_VENV", BENCH / ".venv-ref")) / "bin" / "datasette"
SIZES = [s.strip() for s in os.environ.get("BENCH_SIZES", "10k,1m").split(",") if s.strip()]
BACKENDS = [b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite").split(",")]
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
LOAD_SECONDS = int(os.environ.get("BENCH_LOAD_SECONDS", "30"))
START_RUNS = int(os.environ.get("BENCH_START_RUNS", "3"))
PAGE_URLS, CACHED_URLS, WRITERS = 20_000, 1_000, 32
WRK_TIMEOUT_S = 5
STAMP = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
API = "/api/v1"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes and servers


class Server:
    """A process in its own group, serving on `base`; `ready_s` is spawn to first 200."""

    def __init__(self, name: str, cmd: list[str], probe: str, env: dict[str, str]) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.port = int(env["PORT"])
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = LOGS / f"{STAMP}-{name}.log"
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        with httpx.Client(timeout=5) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {self.log.read_text()[-2000:]}")
                try:
                    if client.get(self.base + probe).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - started > 120:
                    raise RuntimeError(f"{name} did not answer {probe} in 120 s")
                time.sleep(0.01)
        self.ready_s = round(time.perf_counter() - started, 3)

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback (most recent call last)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(name: str, cmd: list[str], probe: str, **env: str) -> Iterator[Server]:
    port = str(free_port())
    full = {**os.environ, "HOST": "127.0.0.1", "PORT": port, "LOG_LEVEL": "warning", **env}
    full.pop("PYTHONDONTWRITEBYTECODE", None)  # as deployed: bytecode cached after one start
    server = Server(name, [c.replace("{port}", port) for c in cmd], probe, full)
    try:
        yield server
    finally:
        server.stop()


def app_server(url: str, name: str, probe: str = "/healthz", **env: str) -> Any:
    return serve(name, [PYTHON, "-m", "app", "serve"], probe, DATABASE_URL=url, **env)


# ---------------------------------------------------------------- measurements


def wrk(
    base: str,
    paths: list[str],
    connections: int,
    seconds: int,
    script: str = "wrk.lua",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run, a random path of `paths` per request; req/s, latency, errors. A script
    built on wrk.lua may print more NAME_JSON lines; each lands under its name."""
    LOGS.mkdir(parents=True, exist_ok=True)
    urls = LOGS / f"{STAMP}-urls-{len(paths)}.txt"
    urls.write_text("\n".join(paths) + "\n")
    cmd = ["wrk", f"-t{min(THREADS, connections)}", f"-c{connections}", f"-d{seconds}s",
           "--timeout", f"{WRK_TIMEOUT_S}s", "-s", str(BENCH / script), base]  # fmt: skip
    full_env = {**os.environ, **(env or {}), "BENCH_URLS": str(urls)}
    done = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=seconds + 90)
    printed = {
        m[1].lower(): json.loads(m[2])
        for m in re.finditer(r"^([A-Z]+)_JSON (\{.*\})$", done.stdout, re.M)
    }
    if "bench" not in printed:
        raise RuntimeError(f"wrk gave no result: {done.stdout}{done.stderr}")
    raw = printed.pop("bench")
    e, lat, secs = raw["errors"], raw["latency_us"], raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "distinct_urls": raw["distinct_paths"],
        "requests": raw["requests"],
        "rps": round(raw["requests"] / secs, 1),
        "p50_ms": round(lat["p50"] / 1000, 2),
        "p99_ms": round(lat["p99"] / 1000, 2),
        "max_ms": round(lat["max"] / 1000, 2),
        "non_2xx": e["status"],
        "socket_errors": e["connect"] + e["read"] + e["write"],
        "timeouts": e["timeout"],
        **printed,
    }


def measure(server: Server, label: str, paths: list[str], connections: int = CONNECTIONS,
            **kw: Any) -> dict[str, Any]:  # fmt: skip
    """A warm-up (discarded), then the measured run."""
    if WARMUP:
        wrk(server.base, paths, connections, WARMUP, **kw)
    result = wrk(server.base, paths, connections, SECONDS, **kw)
    log(f"  {label}: {result['rps']:,.0f} req/s, p99 {result['p99_ms']} ms, "
        f"non-2xx {result['non_2xx']}, socket errors {result['socket_errors']}")  # fmt: skip
    return result


def prime(base: str, paths: list[str]) -> None:
    """Asks every path once, so that the cached-page run measures answers from the cache."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for path in paths:
            client.get(path).raise_for_status()


def rss_kb(pid: int) -> int:
    try:
        found = re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return 0
    return int(found[1]) if found else 0


def stream_rows(
    label: str, cmd: list[str], pid: int | None = None, header: int = 0, runs: int = 2
) -> dict[str, Any]:
    """Runs `cmd` (curl, sqlite3, psql) and counts the CSV lines it prints; the fastest of
    `runs` runs, with the server's largest RSS growth (`pid`) of all."""
    results = []
    for _ in range(runs):
        base_kb = peak_kb = rss_kb(pid) if pid else 0
        started, lines = time.perf_counter(), 0
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            lines += chunk.count(b"\n")
            peak_kb = max(peak_kb, rss_kb(pid) if pid else 0)  # every MB of CSV
        proc.wait()
        seconds = time.perf_counter() - started
        rows = lines - header
        results.append({"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
                     "exit_code": proc.returncode})  # fmt: skip
        if pid:
            results[-1]["rss_growth_mb"] = round((peak_kb - base_kb) / 1024, 1)
    best = {**max(results, key=lambda r: r["rows_per_s"])}
    if pid:
        best["rss_growth_mb"] = max(r["rss_growth_mb"] for r in results)
    log(f"  {label}: {best['rows']:,} rows, {best['rows_per_s']:,} rows/s"
        + (f", RSS +{best['rss_growth_mb']} MB" if pid else ""))  # fmt: skip
    return best


def curl(url: str) -> list[str]:
    return ["curl", "-sS", "--fail", "--max-time", "300", url]


def pages(meta: dict[str, Any]) -> list[tuple[str, str, int]]:
    """PAGE_URLS distinct (city, indicator, year_to) filters; each matches the pair's 50 rows."""
    pairs = [(c, i) for c in meta["cities"] for i in meta["indicators"]]
    per_pair = -(-PAGE_URLS // len(pairs))
    return [(c, i, generate.YEARS[-1] + k) for k in range(per_pair) for c, i in pairs][:PAGE_URLS]


def sqlite_scalar(db: Path, sql: str) -> Any:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def bench_app(url: str, label: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Start, page, cached page and CSV export of the app on the database at `url`."""
    filters = pages(meta)
    page = [
        f"{API}/observations?city={c}&indicator={i}&year_to={y}&limit=50" for c, i, y in filters
    ]
    out: dict[str, Any] = {"starts_s": []}
    for n in range(START_RUNS):
        with app_server(url, f"app-{label}", page[0]) as app:
            out["starts_s"].append(app.ready_s)
            if n < START_RUNS - 1:
                continue
            out["start_s"] = min(out["starts_s"])
            log(f"  start: {out['start_s']} s (of {out['starts_s']})")
            body = httpx.get(app.base + page[0], timeout=30).json()
            out["page_rows"] = len(body["items"])
            out["page"] = measure(app, "page", page)
            prime(app.base, page[:CACHED_URLS])
            out["cached_page"] = measure(app, "cached page", page[:CACHED_URLS])
            out["csv"] = stream_rows(
                "CSV", curl(f"{app.base}{API}/observations.csv"), app.proc.pid, 1
            )
            out["server_tracebacks"] = app.tracebacks()
    return out


def bench_writes(db: Path, label: str) -> dict[str, Any]:
    """PATCH of a note, one client then WRITERS at once, on a copy of the SQLite file."""
    copy = db.with_name(f"writes-{db.name}")
    shutil.copyfile(db, copy)
    url = f"sqlite:///{copy}"
    try:
        key = generate.cli(
            url, "keys", "create", "--name", "bench-writer", "--scope", "write"
        ).strip()
        low, high = sqlite_scalar(copy, "select min(id) || ' ' || max(id) from observation").split()
        env = {"BENCH_KEY": key, "BENCH_MIN_ID": low, "BENCH_MAX_ID": high}
        out: dict[str, Any] = {}
        with app_server(url, f"writes-{label}", RATE_LIMIT_WRITES="") as app:
            out["one_client"] = measure(
                app, "writes, 1 client", ["/"], 1, script="writes.lua", env=env
            )
            out["clients_32"] = measure(app, f"writes, {WRITERS} clients", ["/"], WRITERS,
                                        script="writes.lua", env=env)  # fmt: skip
            out["server_tracebacks"] = app.tracebacks()
        answered = sum(r["requests"] - r["non_2xx"] for r in (out["one_client"], out["clients_32"]))
        audited = sqlite_scalar(
            copy, "select count(*) from audit_event where actor = 'bench-writer'"
        )
        out["answered_2xx"], out["audited"] = answered, audited
        out["all_audited"] = audited >= answered
        return out
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)


def bench_sqlite(size: str) -> dict[str, Any]:
    meta = {**generate.grid(size), **generate.ensure_sqlite(size)}
    db = generate.sqlite_path(size)
    log(f"SQLite {size}: {db.name} ({db.stat().st_size / 1e6:,.0f} MB)")
    out = {
        "build": {k: meta[k] for k in ("build_seconds", "cached")},
        "app": bench_app(meta["url"], size, meta),
    }
    if DATASETTE.exists():
        cmd = [str(DATASETTE), "serve", str(db), "-h", "127.0.0.1", "-p", "{port}",
               "--setting", "max_csv_mb", "0", "--setting", "suggest_facets", "off"]  # fmt: skip
        with serve(f"datasette-{size}", cmd, "/-/versions.json") as ds:
            ds_page = [f"/{db.stem}/observation.json?city_code={c}&indicator_code={i}"
                       f"&period__lte={y}&_size=50" for c, i, y in pages(meta)]  # fmt: skip
            out["datasette_page"] = measure(ds, "Datasette page", ds_page)
            csv_url = f"{ds.base}/{db.stem}/observation.csv?_stream=on&_size=max"
            out["datasette_csv"] = stream_rows("Datasette CSV", curl(csv_url), header=1, runs=1)
    sqlite_cmd = ["sqlite3", "-csv", "-noheader", str(db), "select * from observation"]
    out["sqlite3_csv"] = stream_rows("sqlite3 CSV", sqlite_cmd)
    out["writes"] = bench_writes(db, size)
    return out


@contextmanager
def postgres(url: str | None = os.environ.get("BENCH_POSTGRES_URL")) -> Iterator[str]:
    """The server at `url` (BENCH_POSTGRES_URL), or a throwaway one from .ci/postgres."""
    if url:
        yield url
        return
    script = 'source .ci/postgres; trap pg_stop EXIT; pg_start >&2 || exit 1; echo "$TEST_POSTGRES_URL"; read -r _'
    helper = subprocess.Popen(["bash", "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert helper.stdin is not None and helper.stdout is not None
    try:
        url = helper.stdout.readline().strip()
        if not url:
            raise RuntimeError("could not start PostgreSQL with .ci/postgres")
        yield url
    finally:
        helper.stdin.close()  # `read` returns; the trap runs pg_stop
        helper.wait(60)


def bench_postgres(size: str, server_url: str) -> dict[str, Any]:
    meta = {**generate.grid(size), **generate.ensure_postgres(size, server_url)}
    log(f"PostgreSQL {size}")
    out = {"app": bench_app(meta["url"], f"pg-{size}", meta)}
    copy = "COPY (select * from observation) TO STDOUT WITH (FORMAT csv)"
    out["psql_csv"] = stream_rows(
        "psql COPY", ["psql", "-X", "-q", "-d", generate.libpq(meta["url"]), "-c", copy]
    )
    return out


# ---------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    def first_line(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        return (done.stdout or done.stderr).strip().split("\n")[0]

    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu[1] if cpu else platform.processor(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": first_line("wrk", "--version").split(" [")[0],
        "git_describe": first_line("git", "describe", "--always", "--dirty", "--tags"),
        "git_head": first_line("git", "rev-parse", "HEAD"),
        "loadavg_at_start": os.getloadavg(),  # other work on the machine skews every figure
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals on SQLite at the run's largest size; met is None when not measured."""
    big = results["sqlite"][SIZES[-1]]
    app, w = big["app"], big["writes"]
    ds_page = big.get("datasette_page", {}).get("rps")
    ds_csv = big.get("datasette_csv", {}).get("rows_per_s")
    load = results.get("mixed_load", {})
    rows = [
        ("page", "req/s / Datasette's", ratio(app["page"]["rps"], ds_page), ">=", 5),
        ("page", "p99 ms", app["page"]["p99_ms"], "<=", 50),
        ("cached page", "req/s / Starlette hello-world's",
         ratio(app["cached_page"]["rps"], results["starlette"]["rps"]), ">=", 0.25),
        ("CSV export", "rows/s / Datasette's", ratio(app["csv"]["rows_per_s"], ds_csv), ">=", 4),
        ("CSV export", "rows/s / sqlite3 CLI's",
         ratio(app["csv"]["rows_per_s"], big["sqlite3_csv"]["rows_per_s"]), ">=", 0.4),
        ("CSV export", "server RSS growth MB", app["csv"]["rss_growth_mb"], "<=", 30),
        ("start", "seconds to first page", app["start_s"], "<", 1),
        ("writes", "PATCH req/s, 1 client", w["one_client"]["rps"], ">=", 400),
        ("writes", f"PATCH req/s, {WRITERS} clients", w["clients_32"]["rps"], ">=", 400),
        ("mixed load", "p99 ms (make load)", load.get("p99_ms"), "<=", 250),
    ]  # fmt: skip
    test = {">=": float.__ge__, "<=": float.__le__, "<": float.__lt__}
    return [
        {"area": area, "measure": what, "value": value, "goal": f"{op} {target}",
         "met": None if value is None else test[op](float(value), float(target))}
        for area, what, value, op, target in rows
    ]  # fmt: skip


def main() -> int:
    missing = [t for t in ("wrk", "curl", "sqlite3") if shutil.which(t) is None]
    if missing:
        log(f"missing: {', '.join(missing)} (make bench installs them)")
        return 2
    if not DATASETTE.exists():
        log(f"!! no Datasette at {DATASETTE}: its ratios will be missing (make bench builds it)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "label": os.environ.get("BENCH_LABEL", ""),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "config": {"sizes": SIZES, "backends": BACKENDS, "seconds": SECONDS, "warmup": WARMUP,
                   "connections": CONNECTIONS, "wrk_threads": THREADS, "load_seconds": LOAD_SECONDS},
        "sqlite": {},
    }  # fmt: skip
    wall = time.perf_counter()
    out = RESULTS / f"{STAMP}.json"
    try:
        hello = [PYTHON, "-m", "uvicorn", "hello:app", "--app-dir", str(BENCH), "--port", "{port}",
                 "--log-level", "warning"]  # fmt: skip
        with serve("starlette-hello", hello, "/") as server:
            log("Starlette hello-world")
            results["starlette"] = measure(server, "hello-world", ["/"])
        if "sqlite" in BACKENDS:
            for size in SIZES:
                results["sqlite"][size] = bench_sqlite(size)
            if LOAD_SECONDS:
                import load  # bench/load.py

                log(f"mixed load (make load's SQLite run, {LOAD_SECONDS} s)")
                mixed = load.run_sqlite(LOAD_SECONDS)
                results["mixed_load"] = {k: mixed[k] for k in ("rps", "p50_ms", "p99_ms", "max_ms")}
                results["mixed_load"]["problems"] = mixed["problems"]
            results["goals"] = goals(results)
        if "postgresql" in BACKENDS:
            results["postgresql"] = {}
            with postgres() as server_url:
                for size in SIZES:
                    results["postgresql"][size] = bench_postgres(size, server_url)
    finally:
        results["wall_seconds"] = round(time.perf_counter() - wall)
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        log(f"results: {out.relative_to(ROOT)}")
    for g in results.get("goals", []):
        met = {True: "met", False: "NOT MET", None: "not measured"}[g["met"]]
        print(f"{g['area']:<11} {g['measure']:<34} {g['value']!s:>10} {g['goal']:<8} {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
