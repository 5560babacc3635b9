"""The benchmark behind `make bench` (docs/performance.md says how to read it).

For each backend (BENCH_BACKENDS, default sqlite,postgresql: every size on SQLite first, then
on PostgreSQL) and each size (BENCH_SIZES, default 10k,100k,1m), it builds or reuses a
synthetic database (bench/generate.py: the app's models and import path), serves it with
`python -m app serve` (one uvicorn worker, LOG_LEVEL=warning) on a free loopback port, and
drives it with wrk (bench/wrk.lua: a random path per request from a list). In the same run, on
the same machine, it measures the references: a bare Starlette hello-world; on SQLite, Datasette
serving the same file and the sqlite3 command-line tool's CSV dump; on PostgreSQL, psql's
`COPY (select * from observation) TO STDOUT` as the CSV floor; for start, the app's
libraries imported alone and the references' own starts. It prints a markdown table and
writes everything to bench/results/<timestamp>.json (server logs beside it).

PostgreSQL: unless BENCH_POSTGRES_URL names a server (a SQLAlchemy URL to a database the user
may CREATE DATABASE from), the run starts a throwaway server with .ci/postgres (pg_start), uses
it for every size and stops it at the end (pg_stop), also on failure or Ctrl-C. Its data is
restored from bench/data/pg_<size>_g<V>.dump when that cache exists (bench/generate.py).

Knobs (environment): BENCH_BACKENDS, BENCH_SIZES, BENCH_POSTGRES_SIZES (default: BENCH_SIZES),
BENCH_POSTGRES_URL, BENCH_PAGE_URLS (20,000 distinct page URLs at every size),
BENCH_SPREAD_URLS (1,000: the first of them, asked again and again), BENCH_SECONDS
(10, per measured run), BENCH_WARMUP (2), BENCH_CONNECTIONS
(64), BENCH_HIGH_CONNECTIONS (256), BENCH_THREADS (wrk threads, 2), BENCH_CSV_TIMEOUT (180 s
per export; a slower one is cut and its rows/s is that of the part received), BENCH_CSV_RUNS
(3 runs of each full export, ours and the floor's; the fastest counts), BENCH_START_RUNS (3
starts of the app on each database; the fastest counts), BENCH_REFERENCES
(1; 0 skips Starlette, Datasette and the sqlite3 and psql dumps, for quick runs),
BENCH_REF_VENV (Datasette's virtualenv; `make bench` builds it with BENCH_PYTHON and sets it).
The harness runs its servers on the interpreter that runs it (`make bench`: BENCH_PYTHON).

Every server binds 127.0.0.1 (PostgreSQL: a Unix socket only) and is stopped at the end, also
on failure or Ctrl-C.
"""

import atexit
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import generate  # noqa: E402  (bench/generate.py)

PYTHON = sys.executable  # the app's virtualenv (make bench builds it from BENCH_PYTHON)
DATASETTE = Path(os.environ.get("BENCH_REF_VENV", BENCH / ".venv-ref")) / "bin" / "datasette"
RESULTS = BENCH / "results"

SIZES = [generate.size_key(s) for s in os.environ.get("BENCH_SIZES", "10k,100k,1m").split(",")]
PG_SIZES = [
    generate.size_key(s)
    for s in os.environ.get("BENCH_POSTGRES_SIZES", ",".join(SIZES)).split(",")
    if s.strip()
]
BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
BACKENDS = [
    b.strip().lower()
    for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")
    if b.strip()
]
for _backend in BACKENDS:
    if _backend not in BACKEND_NAMES:
        raise SystemExit(
            f"unknown backend {_backend!r} in BENCH_BACKENDS; choose from sqlite, postgresql"
        )
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL") or None
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
HIGH_CONNECTIONS = int(os.environ.get("BENCH_HIGH_CONNECTIONS", "256"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
CSV_TIMEOUT = int(os.environ.get("BENCH_CSV_TIMEOUT", "180"))
# Each full CSV export, ours and the floors' (sqlite3, COPY), runs this many times and counts
# its fastest: the same 1M-row sqlite3 dump took 2.63 s in one run and 4.03 s in the next.
CSV_RUNS = int(os.environ.get("BENCH_CSV_RUNS", "3"))
# Likewise each start of the app on an existing database: the same start took 1.08 s and then
# 1.74 s, on the same files, a few seconds apart.
START_RUNS = int(os.environ.get("BENCH_START_RUNS", "3"))
REFERENCES = os.environ.get("BENCH_REFERENCES", "1") != "0"
WRK_TIMEOUT_S = 5  # wrk counts a request unanswered this long as a timeout

STAMP = time.strftime("%Y%m%dT%H%M%S")
LOGS = RESULTS / f"{STAMP}-logs"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


class Processes:
    """Every process this run starts, each in its own process group, so that stop() ends it
    and anything it spawned, by its id."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, **kw: Any):  # type: ignore[no-untyped-def]
        LOGS.mkdir(parents=True, exist_ok=True)
        own_log = "stdout" not in kw
        out = open(LOGS / f"{name}.log", "ab") if own_log else kw.pop("stdout")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=kw.pop("stderr", subprocess.STDOUT),
            start_new_session=True,
            **kw,
        )
        if own_log:
            out.close()  # the child has its own copy
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.live)):
            self.stop(proc)


PROCS = Processes()
atexit.register(PROCS.stop_all)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally, then atexit


signal.signal(signal.SIGTERM, _terminate)
signal.signal(signal.SIGHUP, _terminate)


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds`, from /proc/stat. Sampled while none of our
    servers runs, it shows other work on the machine, which skews every number."""

    def sample() -> tuple[int, int]:
        line = Path("/proc/stat").read_text().split("\n")[0]
        fields = [int(x) for x in line.split()[1:9]]  # user .. steal (guest is inside user)
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return round((busy1 - busy0) / max(total1 - total0, 1), 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(name: str, lines: int = 30) -> str:
    path = LOGS / f"{name}.log"
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout)\w*): (.{0,160})", re.M)


class Server:
    """A server process on a free loopback port; `ready_seconds` is spawn to first 200 on
    `probe`; `health` is what settle() polls."""

    def __init__(
        self, name: str, cmd: list[str], port: int, probe: str, env: dict[str, str], health: str
    ):
        self.name, self.port, self.health = name, port, health
        self.base = f"http://127.0.0.1:{port}"
        self.log = LOGS / f"{name}.log"
        # One client for all polls: a new one per poll (httpx.get) costs ~55 ms of CPU, which
        # the server starting up beside it would pay for.
        with httpx.Client(timeout=5) as client:
            started = time.perf_counter()
            self.proc = PROCS.start(name, cmd, env)
            deadline = started + 120
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{tail(name)}")
                try:
                    if client.get(self.base + probe).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{name} did not answer {probe} within 120 s:\n{tail(name)}")
                time.sleep(0.01)
            self.ready_seconds = time.perf_counter() - started

    def settle(self) -> float:
        """Waits until the server answers `health` again: requests a load run left queued
        must not spill into the next measurement. Returns the seconds it took."""
        started = time.perf_counter()
        while time.perf_counter() - started < 120 and self.proc.poll() is None:
            try:
                if httpx.get(self.base + self.health, timeout=60).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        return round(time.perf_counter() - started, 2)

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def errors_since(self, offset: int) -> dict[str, Any]:
        """Tracebacks the server logged since `offset`, including those of requests answered
        (or failed) after wrk had stopped counting."""
        with self.log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        kinds: dict[str, int] = {}
        for m in EXCEPTION_LINE.finditer(text):
            line = f"{m.group(1)}: {m.group(2)}"
            kinds[line] = kinds.get(line, 0) + 1
        return {"tracebacks": text.count("Traceback (most recent call last)"), "exceptions": kinds}

    def stop(self) -> None:
        PROCS.stop(self.proc)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()


def app_server(url: str, name: str, probe: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "LOG_LEVEL": "warning",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    cmd = [PYTHON, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Server(name, cmd, port, probe, env, "/healthz")


# ---------------------------------------------------------------- PostgreSQL

# What the report records of the server's configuration (SHOW ...).
PG_SETTINGS = (
    "server_version",
    "shared_buffers",
    "work_mem",
    "effective_cache_size",
    "max_connections",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "jit",
    "autovacuum",
)


class PostgresServer:
    """The PostgreSQL server for the run: the one at `url` (BENCH_POSTGRES_URL's unless
    given), or a throwaway one from .ci/postgres. The throwaway server is run by a bash helper
    that sources .ci/postgres, calls pg_start, prints the URL and waits on its stdin; closing
    that pipe (or this process dying, which closes it too) ends the helper, whose EXIT trap
    runs pg_stop."""

    def __init__(
        self, url: str | None = POSTGRES_URL, named_by: str = "BENCH_POSTGRES_URL"
    ) -> None:
        self.helper: subprocess.Popen[str] | None = None
        self.dir: Path | None = None
        if url:
            self.url, self.started_by = url, named_by
            return
        self.started_by = ".ci/postgres (pg_start)"
        script = (
            "source .ci/postgres; trap pg_stop EXIT; pg_start >&2 || exit 1; "
            'echo "$TEST_POSTGRES_URL"; echo "$PG_DIR"; read -r _ || true'
        )
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / "postgres-start.log", "ab") as err:
            self.helper = subprocess.Popen(
                ["bash", "-c", script],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
            )
        assert self.helper.stdout is not None
        self.url = self.helper.stdout.readline().strip()
        folder = self.helper.stdout.readline().strip()
        if not self.url or not folder:
            self.helper.wait(30)
            raise RuntimeError(
                "could not start PostgreSQL with .ci/postgres:\n"
                + (LOGS / "postgres-start.log").read_text(errors="replace")[-2000:]
            )
        self.dir = Path(folder)
        log(f"PostgreSQL started by .ci/postgres in {self.dir}")

    def settings(self) -> dict[str, str]:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return {
                    name: str(conn.execute(text(f"SHOW {name}")).scalar()) for name in PG_SETTINGS
                }
        finally:
            engine.dispose()

    def stop(self) -> None:
        if self.helper is None:
            return
        if self.dir and (self.dir / "server.log").exists():  # pg_stop removes it
            shutil.copyfile(self.dir / "server.log", LOGS / "postgres-server.log")
        if self.helper.poll() is None:
            assert self.helper.stdin is not None
            self.helper.stdin.close()  # `read` returns, bash exits, its trap runs pg_stop
            try:
                self.helper.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.helper.pid, signal.SIGTERM)  # the trap runs on SIGTERM too
                self.helper.wait(60)
        self.helper = None
        log("PostgreSQL stopped (pg_stop)")

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()


def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


# ---------------------------------------------------------------- measurements


def wrk(
    base: str,
    urls: Path,
    connections: int,
    seconds: int,
    script: Path = BENCH / "wrk.lua",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run over the paths in `urls` (a random one per request); returns req/s,
    latency and errors. A `script` that builds on wrk.lua may print more `NAME_JSON {...}`
    lines; each lands under `name` (bench/load.lua's LOAD_JSON under "load")."""
    cmd = [
        "wrk",
        f"-t{min(THREADS, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        f"{WRK_TIMEOUT_S}s",
        "-s",
        str(script),
        base,
    ]
    env = {**os.environ, **(env or {}), "BENCH_URLS": str(urls)}
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    printed = {
        m.group(1).lower(): json.loads(m.group(2))
        for m in re.finditer(r"^([A-Z]+)_JSON (\{.*\})$", done.stdout, re.M)
    }
    if "bench" not in printed:
        raise RuntimeError(f"wrk gave no result ({done.returncode}): {done.stdout}{done.stderr}")
    raw = printed.pop("bench")
    e, lat = raw["errors"], raw["latency_us"]
    seconds_run = raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "seconds": round(seconds_run, 2),
        "distinct_urls": raw["distinct_paths"],
        "requests": raw["requests"],
        "rps": round(raw["requests"] / seconds_run, 1),
        "p50_ms": round(lat["p50"] / 1000, 2),
        "p90_ms": round(lat["p90"] / 1000, 2),
        "p99_ms": round(lat["p99"] / 1000, 2),
        "max_ms": round(lat["max"] / 1000, 2),
        "non_2xx": e["status"],  # wrk counts HTTP status >= 400 here
        "socket_errors": e["connect"] + e["read"] + e["write"],
        "timeouts": e["timeout"],  # wrk's count of checks that found a request over --timeout
        "mb_per_s": round(raw["bytes"] / seconds_run / 1e6, 2),
        **printed,
    }


def load(server: Server, paths: list[str], connections: int, label: str) -> dict[str, Any]:
    """A warm-up (discarded), then the measured run; afterwards, waits for the server to
    settle and counts the errors it logged meanwhile."""
    offset = server.log_offset()
    urls = LOGS / f"{label}.urls"
    urls.write_text("\n".join(paths) + "\n")
    if WARMUP:
        wrk(server.base, urls, connections, WARMUP)
        server.settle()
    result = wrk(server.base, urls, connections, SECONDS)
    result["settle_s"] = server.settle()
    errors = server.errors_since(offset)
    result["server_errors"] = errors["tracebacks"]
    if errors["exceptions"]:
        result["server_exceptions"] = errors["exceptions"]
    log(
        f"  {label}: {result['rps']:,.0f} req/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, non-2xx {result['non_2xx']}, "
        f"socket errors {result['socket_errors']}, timeouts {result['timeouts']} "
        f"({result['distinct_urls']} URLs)"
        + (f"; server logged {errors['tracebacks']} tracebacks" if errors["tracebacks"] else "")
        + (f"; {result['settle_s']} s to settle" if result["settle_s"] > 1 else "")
    )
    return result


def cold(base: str, paths: list[str], count: int = 200) -> dict[str, Any]:
    """Each of `count` URLs requested once, one at a time, before anything else asked for
    them: the service time of a response no cache has seen yet."""
    sample = random.Random(2).sample(paths, min(count, len(paths)))
    times, non_2xx = [], 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for path in sample:
            started = time.perf_counter()
            non_2xx += client.get(path).status_code >= 300
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    result = {
        "connections": 1,
        "seconds": round(sum(times) / 1000, 2),
        "distinct_urls": len(sample),
        "requests": len(sample),
        "rps": round(len(sample) / (sum(times) / 1000), 1),
        "p50_ms": round(times[len(times) // 2], 2),
        "p90_ms": round(times[int(len(times) * 0.9)], 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "max_ms": round(times[-1], 2),
        "non_2xx": non_2xx,
        "socket_errors": 0,
        "timeouts": 0,
        "server_errors": 0,
    }
    log(f"  page-cold: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, {len(sample)} URLs")
    return result


def check(base: str, paths: list[str], rows: int | None, key: str = "items") -> str | None:
    """Before loading an endpoint: a few of its URLs answer 200 (with `rows` rows)."""
    for path in random.Random(1).sample(paths, min(5, len(paths))):
        r = httpx.get(base + path, timeout=30)
        if r.status_code != 200:
            return f"{path}: HTTP {r.status_code}: {r.text[:300]}"
        if rows is not None and len(r.json()[key]) != rows:
            return f"{path}: {len(r.json()[key])} rows, expected {rows}"
    return None


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every 50 ms; `peak_kb` is the highest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stopped = pid, threading.Event()
        self.baseline_kb = self.read()
        self.peak_kb = self.baseline_kb

    def read(self) -> int:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) if match else 0

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            self.peak_kb = max(self.peak_kb, self.read())

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.peak_kb = max(self.peak_kb, self.read())


def count_lines(cmd: list[str], label: str, pid: int | None = None) -> dict[str, Any]:
    """Runs `cmd` (curl or sqlite3) and counts the lines of its output as they arrive;
    optionally samples the server's RSS meanwhile."""
    sampler = RssSampler(pid) if pid else None
    if sampler:
        sampler.start()
    started = time.perf_counter()
    proc = PROCS.start(label, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timer = threading.Timer(CSV_TIMEOUT + 30, lambda: PROCS.stop(proc))
    timer.start()
    lines = size = 0
    first_byte = None
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(1 << 20):
            if first_byte is None:
                first_byte = time.perf_counter() - started
            lines += chunk.count(b"\n")
            size += len(chunk)
        proc.wait()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    finally:
        timer.cancel()
        PROCS.stop(proc)
        if sampler:
            sampler.stop()
    elapsed = time.perf_counter() - started
    result: dict[str, Any] = {
        "exit_code": proc.returncode,
        "seconds": round(elapsed, 2),
        "first_byte_s": round(first_byte or 0, 3),
        "lines": lines,
        "mb": round(size / 1e6, 1),
    }
    if proc.returncode != 0 or stderr.strip():
        result["stderr"] = stderr.strip()[-500:]
    if sampler:
        result["rss_baseline_mb"] = round(sampler.baseline_kb / 1024, 1)
        result["rss_peak_mb"] = round(sampler.peak_kb / 1024, 1)
        result["rss_growth_mb"] = round((sampler.peak_kb - sampler.baseline_kb) / 1024, 1)
    return result


def fastest(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The fastest of CSV_RUNS runs of `measure`, with every run's rows/s beside it; the
    fewest rows, the largest RSS growth and any failed status of all of them, so that no run
    that went wrong is hidden behind a good one."""
    runs = [measure() for _ in range(CSV_RUNS)]
    result = {**max(runs, key=lambda r: r["rows_per_s"])}
    result["runs_rows_per_s"] = [r["rows_per_s"] for r in runs]
    result["rows"] = min(r["rows"] for r in runs)
    for key in ("rss_growth_mb", "rss_peak_mb"):
        if key in result:
            result[key] = max(r[key] for r in runs)
    for key, good in (("exit_code", 0), ("http_status", "200")):
        if key in result:
            result[key] = next((r[key] for r in runs if r[key] != good), good)
    return result


def csv_over_http(url: str, label: str, pid: int, header: bool = True) -> dict[str, Any]:
    cmd = ["curl", "-sS", "-o", "-", "--max-time", str(CSV_TIMEOUT), "-w", "%{stderr}%{http_code}"]
    result = count_lines([*cmd, url], label, pid)
    status = result.pop("stderr", "")
    result["http_status"] = status[-3:]
    if status[:-3].strip():
        result["stderr"] = status[:-3].strip()
    result["rows"] = result["lines"] - (1 if header else 0)
    result["rows_per_s"] = round(result["rows"] / result["seconds"]) if result["seconds"] else 0
    log(
        f"  {label}: {result['rows']:,} rows in {result['seconds']} s "
        f"({result['rows_per_s']:,} rows/s), HTTP {result['http_status']}"
        + (f", RSS +{result['rss_growth_mb']} MB" if "rss_growth_mb" in result else "")
    )
    return result


def sqlite_csv(db: Path) -> dict[str, Any]:
    cmd = ["sqlite3", "-csv", "-noheader", str(db), "select * from observation"]
    result = count_lines(cmd, "sqlite3-csv")
    result["rows"] = result["lines"]
    result["rows_per_s"] = round(result["rows"] / result["seconds"]) if result["seconds"] else 0
    log(f"  sqlite3 -csv: {result['rows']:,} rows in {result['seconds']} s")
    return result


PSQL_COPY = "COPY (select * from observation) TO STDOUT WITH (FORMAT csv)"


def psql_csv(url: str) -> dict[str, Any]:
    """PostgreSQL's floor, the counterpart of the sqlite3 dump: the server's own CSV writer
    (COPY ... TO STDOUT) through psql, over the same Unix socket as the app."""
    psql = str(generate.pg_bindir() / "psql")
    cmd = [
        psql,
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        generate.libpq_url(url),
        "-c",
        PSQL_COPY,
    ]
    result = count_lines(cmd, "psql-csv")
    result["rows"] = result["lines"]
    result["rows_per_s"] = round(result["rows"] / result["seconds"]) if result["seconds"] else 0
    log(f"  psql COPY csv: {result['rows']:,} rows in {result['seconds']} s")
    return result


# ---------------------------------------------------------------- per size


class Target:
    """One size on one backend: the database's URL and how to read it directly."""

    def __init__(self, backend: str, size: str, meta: dict[str, Any]) -> None:
        self.backend, self.size = backend, size
        if backend == "sqlite":
            self.db: Path | None = generate.db_path(size)
            self.url = generate.sqlite_url(self.db)
            self.name = self.db.name
            self.label = size  # log and URL-list names as before PostgreSQL was added
        else:
            self.db = None
            self.url = str(meta["url"])
            self.name = str(meta["database"])
            self.label = f"pg-{size}"

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.db is None:
            return pg_rows(self.url, sql)
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            rows = conn.execute(sql).fetchall()
        conn.close()
        return rows

    def size_mb(self) -> float:
        if self.db is not None:
            return round(self.db.stat().st_size / 1e6, 1)
        ((n,),) = self.rows("select pg_database_size(current_database())")
        return round(int(n) / 1e6, 1)


# Distinct filtered-page URLs at every size, so that no size is served from the response cache
# more than another and the scale ratio compares like with like (at 10k there are only 200
# city+indicator pairs: 200 URLs were all cached after a second, against 20,000 mostly uncached
# at 1M). Each pair is asked with year_to from the last generated year up, which matches all
# of its rows: one query shape, 50 rows, at every size.
PAGE_URLS = int(os.environ.get("BENCH_PAGE_URLS", "20000"))
# The issue's own spread: the first 1,000 of those URLs, distinct filters asked again and again,
# where the response cache answers once each has been asked (its 4,096 entries hold them all).
SPREAD_URLS = int(os.environ.get("BENCH_SPREAD_URLS", "1000"))


def page_filters(pairs: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    per_pair = max(1, -(-PAGE_URLS // len(pairs)))
    return [(c, i, generate.YEARS[-1] + k) for k in range(per_pair) for c, i in pairs][
        : max(PAGE_URLS, len(pairs))
    ]


def paths_for(target: Target, meta: dict[str, Any]) -> dict[str, list[str]]:
    cities, indicators = meta["cities"], meta["indicators"]
    dimensions = [r[0] for r in target.rows("select code from dimension order by code")]
    pages = page_filters([(c, i) for c in cities for i in indicators])
    paths = {
        "city": [f"/api/v1/cities/{c}" for c in cities],
        "page": [
            f"/api/v1/observations?city={c}&indicator={i}&year_to={y}&limit=50" for c, i, y in pages
        ],
        "dimension": [f"/api/v1/dimensions/{d}" for d in dimensions],
        "latest": [f"/api/v1/observations?city={c}&latest=true&limit=50" for c in cities],
    }
    if target.db is not None:
        paths["datasette_page"] = [
            f"/{target.db.stem}/observation.json?city_code={c}&indicator_code={i}"
            f"&period__lte={y}&_size=50"
            for c, i, y in pages
        ]
    return paths


def live_rows(target: Target) -> int:
    ((n,),) = target.rows("select count(*) from observation where deleted_at is null")
    return int(n)


def bench_size(backend: str, size: str, meta: dict[str, Any]) -> dict[str, Any]:
    target = Target(backend, size, meta)
    db, label = target.db, target.label
    out: dict[str, Any] = {
        "backend": backend,
        "database": target.name,
        "rows": meta["rows"],
        "file_mb" if db is not None else "database_mb": target.size_mb(),
        "loadavg_before": os.getloadavg(),
        "cpu_busy_before": cpu_busy(),  # other work on the machine skews every number
    }
    paths = paths_for(target, meta)
    per_combo = len(generate.YEARS)

    started = time.perf_counter()
    migrate = subprocess.run(
        [PYTHON, "-m", "app", "migrate"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": target.url},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    out["migrate_seconds"] = round(time.perf_counter() - started, 2)
    if migrate.returncode != 0:
        raise RuntimeError(
            f"python -m app migrate failed on {target.name}: {migrate.stderr[-2000:]}"
        )
    out["live_rows"] = live_rows(target)

    log(
        f"{size} on {BACKEND_NAMES[backend]}: serving {target.name} ({out['live_rows']:,} "
        f"live observations; CPU "
        f"{out['cpu_busy_before']:.0%} busy with other work just before)"
    )
    checks: dict[str, str] = {}
    server_name = f"app-{db.stem}" if db is not None else f"app-{target.name}"
    starts = []
    for _ in range(START_RUNS - 1):  # the last start is the server measured below
        with app_server(target.url, server_name, paths["page"][0]) as app:
            starts.append(round(app.ready_seconds, 3))
    with app_server(target.url, server_name, paths["page"][0]) as app:
        starts.append(round(app.ready_seconds, 3))
        out["start_seconds"], out["start_runs_seconds"] = min(starts), starts
        log(f"  first response {out['start_seconds']} s after start (of {starts})")
        page_cold = cold(app.base, paths["page"][1:])  # first: no URL of it asked for yet
        for name, rows in (("city", None), ("page", per_combo), ("dimension", None)):
            if problem := check(app.base, paths[name], rows):
                checks[name] = problem
        if problem := check(app.base, paths["latest"], len(meta["indicators"])):
            checks["latest"] = problem
        out["app"] = {
            "city": load(app, paths["city"], CONNECTIONS, f"{label}-city"),
            "page": load(app, paths["page"], CONNECTIONS, f"{label}-page"),
            "dimension": load(app, paths["dimension"], CONNECTIONS, f"{label}-dimension"),
            "latest": load(app, paths["latest"], CONNECTIONS, f"{label}-latest"),
            "page_hot": load(app, paths["page"][:1], CONNECTIONS, f"{label}-page-hot"),
            "page_spread": load(
                app, paths["page"][:SPREAD_URLS], CONNECTIONS, f"{label}-page-spread"
            ),
            "page_cold": page_cold,
        }
        offset = app.log_offset()
        out["app_csv"] = fastest(
            lambda: csv_over_http(
                app.base + "/api/v1/observations.csv", f"{label}-app-csv", app.proc.pid
            )
        )
        out["app_csv"]["expected_rows"] = out["live_rows"]
        out["app_csv"]["server_errors"] = app.errors_since(offset)["tracebacks"]
        # last: a run that overloads the server must not spill into the other measurements
        out["app"]["page_high"] = load(
            app, paths["page"], HIGH_CONNECTIONS, f"{label}-page-c{HIGH_CONNECTIONS}"
        )
        out["app_alive_after"] = app.proc.poll() is None
    out["checks"] = checks
    for name, problem in checks.items():
        log(f"  CHECK FAILED {name}: {problem}")

    if REFERENCES and db is None:
        out["psql_csv"] = fastest(lambda: psql_csv(target.url))
    elif REFERENCES and db is not None:
        port = free_port()
        cmd = [
            str(DATASETTE),
            "serve",
            str(db),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--setting",
            "max_csv_mb",
            "0",  # the default, 100 MB, would cut the full CSV short
            "--setting",
            "suggest_facets",
            "off",  # an HTML nicety that costs 2/3 of its JSON time; off = the stricter reference
        ]
        probe = "/-/versions.json"
        with Server(f"datasette-{size}", cmd, port, probe, dict(os.environ), probe) as ds:
            out["datasette_start_seconds"] = round(ds.ready_seconds, 3)
            if problem := check(ds.base, paths["datasette_page"], per_combo, key="rows"):
                checks["datasette_page"] = problem
                log(f"  CHECK FAILED datasette_page: {problem}")
            out["datasette"] = {
                "page": load(ds, paths["datasette_page"], CONNECTIONS, f"{label}-datasette-page"),
                "page_spread": load(
                    ds,
                    paths["datasette_page"][:SPREAD_URLS],
                    CONNECTIONS,
                    f"{label}-datasette-page-spread",
                ),
            }
            out["datasette_csv"] = csv_over_http(
                f"{ds.base}/{db.stem}/observation.csv?_stream=on&_size=max",
                f"{label}-datasette-csv",
                ds.proc.pid,
            )
        out["sqlite3_csv"] = fastest(lambda: sqlite_csv(db))
    return out


# ---------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)

    def version(cmd: list[str]) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "missing"
        return (
            (done.stdout or done.stderr).strip().splitlines()[0]
            if done.stdout or done.stderr
            else ""
        )

    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = version(["git", "-C", str(ROOT), "status", "--porcelain", "--", "app", "migrations"])
    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "ram_gb": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        # Which build: this machine's python3 (pyenv's, built without PGO or LTO) and Debian's
        # /usr/bin/python3.11 (built with both) run the same code at different speeds.
        "python_binary": os.path.realpath(sys.executable),
        "sqlite_python": sqlite3.sqlite_version,
        "sqlite_cli": version(["sqlite3", "--version"]).split(" ")[0] or None,
        "wrk": version(["wrk", "--version"]).split(" [")[0],
        "datasette": version([str(DATASETTE), "--version"]) if REFERENCES else None,
        "commit": commit + (" + uncommitted changes in app/ or migrations/" if dirty else ""),
    }


# Prints the installed-library modules that importing the app loads, in load order.
LIBRARY_MODULES = """
import sys, sysconfig
paths = tuple({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
import app.main, uvicorn
print(*[n for n, m in list(sys.modules.items()) if (getattr(m, "__file__", None) or "").startswith(paths)])
"""


def libraries_import() -> dict[str, Any]:
    """The floor under the app's start, measured beside it: a fresh interpreter importing
    every installed-library module that `import app.main, uvicorn` loads, and none of the
    app's own code, with the garbage collector off, as `serve` loads them. Best of three, so
    that the first run's cold files do not count."""
    listed = subprocess.run(
        [PYTHON, "-c", LIBRARY_MODULES], cwd=ROOT, capture_output=True, text=True, check=True
    )
    modules = listed.stdout.split()
    code = f"import gc, importlib\ngc.disable()\nfor m in {modules!r}: importlib.import_module(m)"
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", code], cwd=BENCH, check=True)
        times.append(time.perf_counter() - started)
    top = sorted({m.partition(".")[0] for m in modules})
    return {"seconds": round(min(times), 3), "modules": len(modules), "packages": top}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, measured on SQLite at the largest size of the run (they name
    Datasette and the sqlite3 CLI, which exist only for SQLite)."""
    sizes = results["backends"]["sqlite"]["sizes"]
    big, small = sizes[SIZES[-1]], sizes[SIZES[0]]
    page = big["app"]["page"]
    high = big["app"]["page_high"]
    csv = big["app_csv"]
    ds_page = big.get("datasette", {}).get("page", {}).get("rps")
    ds_csv = big.get("datasette_csv", {}).get("rows_per_s")
    sq_csv = big.get("sqlite3_csv", {}).get("rows_per_s")
    hello = results.get("starlette", {}).get("rps")
    # A stall: throughput collapsing below a quarter of the same endpoint's at CONNECTIONS,
    # or more requests left waiting over WRK_TIMEOUT_S than the bare hello-world leaves at
    # the same concurrency (on 2 cores shared with wrk, even it leaves a few).
    hello_timeouts = results.get("starlette_high", {}).get("timeouts", 0)
    stalled = high["timeouts"] > hello_timeouts or high["rps"] < 0.25 * page["rps"]
    high_errors = high["non_2xx"] + high["socket_errors"] + high["server_errors"]

    def goal(area: str, what: str, value: Any, target: str, met: bool | None) -> dict[str, Any]:
        return {"area": area, "measure": what, "value": value, "target": target, "met": met}

    def at_least(v: float | None, t: float) -> bool | None:
        return None if v is None else v >= t

    def page_goals(reading: str, ours: dict[str, Any], datasette: float | None) -> list[Any]:
        r_ds, r_hello = ratio(ours["rps"], datasette), ratio(ours["rps"], hello)
        return [
            goal(
                "filtered page",
                f"{reading}: ours / Datasette req/s",
                r_ds,
                ">= 8",
                at_least(r_ds, 8),
            ),
            goal(
                "filtered page",
                f"{reading}: ours / Starlette hello req/s",
                r_hello,
                ">= 0.20",
                at_least(r_hello, 0.2),
            ),
            goal(
                "filtered page", f"{reading}: p99 ms", ours["p99_ms"], "<= 50", ours["p99_ms"] <= 50
            ),
        ]

    spread = big["app"].get("page_spread")
    ds_spread = big.get("datasette", {}).get("page_spread", {}).get("rps")
    r_csv_ds, r_csv_sq = ratio(csv["rows_per_s"], ds_csv), ratio(csv["rows_per_s"], sq_csv)
    scale = ratio(page["p50_ms"], small["app"]["page"]["p50_ms"]) if len(SIZES) > 1 else None
    cold_scale = big["app"]["page_cold"]["p50_ms"] / small["app"]["page_cold"]["p50_ms"]
    return [
        *page_goals(f"{page['distinct_urls']:,} URLs, mostly first asks", page, ds_page),
        *(
            page_goals(f"the same {SPREAD_URLS:,} URLs again and again", spread, ds_spread)
            if spread
            else []
        ),
        goal(
            "high concurrency",
            f"filtered page at {HIGH_CONNECTIONS} connections: errors (non-2xx, socket, "
            f"logged by the server); stall (under 1/4 of the req/s at {CONNECTIONS}, or more "
            f"requests waiting over {WRK_TIMEOUT_S} s than Starlette's at {HIGH_CONNECTIONS})",
            f"{high_errors} errors ({high['server_errors']} logged); {high['rps']:,.0f} req/s "
            f"vs {page['rps']:,.0f}; {high['timeouts']} timeouts vs Starlette's "
            f"{hello_timeouts}; max {high['max_ms']:,.0f} ms",
            "0 errors, no stall",
            high_errors == 0 and not stalled,
        ),
        goal("CSV export", "ours / Datasette rows/s", r_csv_ds, ">= 5", at_least(r_csv_ds, 5)),
        goal(
            "CSV export", "ours / sqlite3 CLI rows/s", r_csv_sq, ">= 0.40", at_least(r_csv_sq, 0.4)
        ),
        goal(
            "CSV export",
            "server RSS growth MB",
            csv.get("rss_growth_mb"),
            "<= 30",
            csv.get("rss_growth_mb", 1e9) <= 30 and csv["rows"] >= csv["expected_rows"],
        ),
        goal(
            "scale",
            f"page p50 at {SIZES[-1]} / at {SIZES[0]}",
            scale,
            "<= 1.5",
            None if scale is None else scale <= 1.5,
        ),
        goal(
            "scale",
            f"same, uncached (new URLs, one connection): p50 at {SIZES[-1]} / at {SIZES[0]}",
            round(cold_scale, 3) if len(SIZES) > 1 else None,
            "<= 1.5",
            None if len(SIZES) == 1 else cold_scale <= 1.5,
        ),
        goal(
            "start",
            "seconds to first response"
            + (
                f" (beside it: the app's libraries imported alone {libraries} s, Datasette "
                f"{big.get('datasette_start_seconds')} s, Starlette hello-world "
                f"{results.get('starlette_start_seconds')} s)"
                if (libraries := results.get("libraries_import", {}).get("seconds"))
                else ""
            ),
            big["start_seconds"],
            "< 1",
            big["start_seconds"] < 1,
        ),
    ]


SCENARIOS = {
    "city": "one city `/cities/{code}`",
    "page": "filtered page `?city&indicator&limit=50`",
    "dimension": "dimension `/dimensions/{code}`",
    "latest": "latest for a city `?city&latest=true`",
    "page_hot": "filtered page, one hot URL",
    "page_spread": f"filtered page, the same {SPREAD_URLS:,} URLs again and again (cache warm)",
    "page_cold": "filtered page, new URLs one at a time (uncached)",
    "page_high": f"filtered page, {HIGH_CONNECTIONS} connections",
}
CSV_EXPORTS = (
    ("app_csv", "ours `/observations.csv`"),
    ("datasette_csv", "Datasette `_stream=on`"),
    ("sqlite3_csv", "sqlite3 `-csv` dump"),
    ("psql_csv", "psql `COPY ... TO STDOUT` csv"),
)


def by_size(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(size, backend, its results, its generation) in the order of the run."""
    return [
        (size, backend, s, run["generation"][size])
        for backend, run in results["backends"].items()
        for size, s in run["sizes"].items()
    ]


def markdown(results: dict[str, Any]) -> str:
    def n(v: Any, fmt: str = ",.0f") -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        f"Run {results['started']} on {results['machine']['nproc']} cores "
        f"({results['machine']['cpu']}); {SECONDS} s per run after {WARMUP} s warm-up; "
        f"wrk {THREADS} threads.",
        "",
        "| size | backend | server | scenario | URLs | conns | req/s | p50 ms | p99 ms | max ms "
        "| non-2xx | socket errors | timeouts | errors logged |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(size: str, backend: str, server: str, scenario: str, r: dict[str, Any]) -> str:
        return (
            f"| {size} | {backend} | {server} | {scenario} | {r['distinct_urls']:,} | "
            f"{r['connections']} | {n(r['rps'])} | {n(r['p50_ms'], '.1f')} | "
            f"{n(r['p99_ms'], '.1f')} | {n(r['max_ms'], '.0f')} | {r['non_2xx']} | "
            f"{r['socket_errors']} | {r['timeouts']} | {r['server_errors']} |"
        )

    if "starlette" in results:
        lines.append(row("-", "-", "Starlette hello", "`GET /`", results["starlette"]))
        lines.append(row("-", "-", "Starlette hello", "`GET /`", results["starlette_high"]))
    runs = by_size(results)
    for size, backend, s, _ in runs:
        name = BACKEND_NAMES[backend]
        for key, label in SCENARIOS.items():
            lines.append(row(size, name, "ours", label, s["app"][key]))
        if "datasette" in s:
            lines.append(
                row(size, name, "Datasette", "filtered page `_size=50`", s["datasette"]["page"])
            )
            lines.append(
                row(
                    size,
                    name,
                    "Datasette",
                    f"filtered page `_size=50`, the same {SPREAD_URLS:,} URLs",
                    s["datasette"]["page_spread"],
                )
            )
    lines += [
        "",
        "| size | backend | full CSV export | rows | seconds | rows/s | server RSS growth MB |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for size, backend, s, _ in runs:
        for key, label in CSV_EXPORTS:
            if key in s:
                c = s[key]
                cut = c["rows"] < s["live_rows"]
                lines.append(
                    f"| {size} | {BACKEND_NAMES[backend]} | {label} | {c['rows']:,}"
                    f"{' (**cut short**)' if cut else ''} | {c['seconds']} | "
                    f"{n(c['rows_per_s'])} | {n(c.get('rss_growth_mb'), '.1f')} |"
                )
    lines += [
        "",
        "| size | backend | rows | generation (apply_import) s | restore s | VACUUM ANALYZE s "
        "| migrate s | first response after start s | ours / Datasette page req/s "
        "| CPU busy with other work before |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, backend, s, g in runs:
        ds = s.get("datasette", {}).get("page", {}).get("rps")
        lines.append(
            f"| {size} | {BACKEND_NAMES[backend]} | {s['live_rows']:,} | "
            f"{g['generation_seconds']} ({g['import_seconds']}) | "
            f"{n(g.get('restore_seconds'), '.1f')} | {n(g.get('vacuum_analyze_seconds'), '.1f')} | "
            f"{s['migrate_seconds']} | {s['start_seconds']} | "
            f"{n(ratio(s['app']['page']['rps'], ds), '.2f')} | {s['cpu_busy_before']:.0%} |"
        )
    lines += side_by_side(results)
    if results.get("goals"):
        lines += [
            "",
            f"Goals (issue 4), on SQLite at {SIZES[-1]}:",
            "",
            "| area | measure | value | goal | met |",
            "|---|---|---|---|---|",
        ]
        for g in results["goals"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
            lines.append(f"| {g['area']} | {g['measure']} | {g['value']} | {g['target']} | {met} |")
    problems = {
        f"{size} {BACKEND_NAMES[backend]}": s["checks"]
        for size, backend, s, _ in runs
        if s.get("checks")
    }
    if problems:
        lines += ["", "Failed checks (a response was not what the benchmark expects):"]
        for where, checks in problems.items():
            lines += [f"- {where} {name}: {text}" for name, text in checks.items()]
    return "\n".join(lines)


def side_by_side(results: dict[str, Any]) -> list[str]:
    """For each size both backends ran: each scenario's req/s, p50 and p99 on SQLite and on
    PostgreSQL, then the CSV exports and their floors."""
    sq = results["backends"].get("sqlite", {}).get("sizes", {})
    pg = results["backends"].get("postgresql", {}).get("sizes", {})
    both = [size for size in sq if size in pg]
    if not both:
        return []

    def n(v: Any, fmt: str = ",.0f") -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        "",
        "SQLite and PostgreSQL side by side (ours):",
        "",
        "| size | scenario | SQLite req/s | p50 ms | p99 ms | PostgreSQL req/s | p50 ms | p99 ms "
        "| PostgreSQL / SQLite req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in both:
        for key, label in SCENARIOS.items():
            a, b = sq[size]["app"][key], pg[size]["app"][key]
            lines.append(
                f"| {size} | {label} | {n(a['rps'])} | {n(a['p50_ms'], '.1f')} | "
                f"{n(a['p99_ms'], '.1f')} | {n(b['rps'])} | {n(b['p50_ms'], '.1f')} | "
                f"{n(b['p99_ms'], '.1f')} | {n(ratio(b['rps'], a['rps']), '.2f')} |"
            )
    lines += [
        "",
        "| size | SQLite CSV rows/s | RSS growth MB | sqlite3 floor rows/s | PostgreSQL CSV rows/s "
        "| RSS growth MB | psql COPY floor rows/s | PostgreSQL / SQLite CSV rows/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in both:
        a, b = sq[size]["app_csv"], pg[size]["app_csv"]
        floor_a = sq[size].get("sqlite3_csv", {}).get("rows_per_s")
        floor_b = pg[size].get("psql_csv", {}).get("rows_per_s")
        lines.append(
            f"| {size} | {n(a['rows_per_s'])} | {n(a.get('rss_growth_mb'), '.1f')} | "
            f"{n(floor_a)} | {n(b['rows_per_s'])} | {n(b.get('rss_growth_mb'), '.1f')} | "
            f"{n(floor_b)} | {n(ratio(b['rows_per_s'], a['rows_per_s']), '.2f')} |"
        )
    return lines


def generate_data(backend: str, sizes: list[str], server_url: str | None = None) -> dict[str, Any]:
    """bench/generate.py for each size, as a process of its own; its metadata per size."""
    generation: dict[str, Any] = {}
    for size in sizes:  # data first: a failed import should not waste a load run
        extra = ["--postgres", server_url] if server_url else []
        done = subprocess.run(
            [PYTHON, str(BENCH / "generate.py"), *extra, size],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"generating {size} on {backend} failed ({done.returncode})")
        meta = json.loads(done.stdout.decode().strip().splitlines()[-1])
        generation[size] = meta
        how = (
            f"restored from its dump in {meta['restore_seconds']} s"
            if meta.get("restore_seconds") is not None
            else "cached"
            if meta["cached"]
            else "new"
        )
        log(
            f"{size} on {BACKEND_NAMES[backend]}: {meta['rows']:,} rows, generated in "
            f"{meta['generation_seconds']} s ({how})"
            + (
                f"; VACUUM ANALYZE {meta['vacuum_analyze_seconds']} s"
                if "vacuum_analyze_seconds" in meta
                else ""
            )
        )
    return generation


def main() -> int:
    tools = ["wrk", "curl"] + (["sqlite3"] if "sqlite" in BACKENDS else [])
    missing = [t for t in tools if shutil.which(t) is None]
    if REFERENCES and "sqlite" in BACKENDS and not DATASETTE.exists():
        missing.append(str(DATASETTE))
    if missing:
        log(f"missing: {', '.join(missing)} (make bench installs them)")
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    # The app's bytecode written beforehand, as the Dockerfile and `make serve` do, so that no
    # start spends ~80 ms compiling app/ (PYTHONDONTWRITEBYTECODE keeps Python from caching it).
    subprocess.run([PYTHON, "-m", "compileall", "-q", "app"], cwd=ROOT, check=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "config": {
            "backends": BACKENDS,
            "sizes": SIZES,
            "postgres_sizes": PG_SIZES,
            "seconds": SECONDS,
            "warmup": WARMUP,
            "connections": CONNECTIONS,
            "high_connections": HIGH_CONNECTIONS,
            "wrk_threads": THREADS,
            "wrk_timeout_s": WRK_TIMEOUT_S,
            "command": "make bench",
        },
        "backends": {},
    }
    out = RESULTS / f"{STAMP}.json"
    wall = time.perf_counter()
    run: dict[str, Any]
    try:
        if "sqlite" in BACKENDS:
            results["backends"]["sqlite"] = {
                "generation": generate_data("sqlite", SIZES),
                "sizes": {},
            }
        if REFERENCES:
            port = free_port()
            cmd = [
                PYTHON, "-m", "uvicorn", "hello:app", "--app-dir", str(BENCH), "--host",
                "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning",
            ]  # fmt: skip
            results["cpu_busy_before_starlette"] = cpu_busy()
            log(
                f"Starlette hello-world (CPU {results['cpu_busy_before_starlette']:.0%} busy before)"
            )
            results["libraries_import"] = libraries_import()
            log(f"the app's libraries alone import in {results['libraries_import']['seconds']} s")
            with Server("starlette-hello", cmd, port, "/", dict(os.environ), "/") as hello:
                results["starlette_start_seconds"] = round(hello.ready_seconds, 3)
                results["starlette"] = load(hello, ["/"], CONNECTIONS, "starlette-hello")
                results["starlette_high"] = load(
                    hello, ["/"], HIGH_CONNECTIONS, f"starlette-hello-c{HIGH_CONNECTIONS}"
                )
        if "sqlite" in BACKENDS:
            run = results["backends"]["sqlite"]
            for size in SIZES:
                run["sizes"][size] = bench_size(
                    "sqlite", size, {**run["generation"][size], **generate.grid(size)}
                )
            results["goals"] = goals(results)
        if "postgresql" in BACKENDS:
            with PostgresServer() as server:
                run = {
                    "server": {"started_by": server.started_by, **server.settings()},
                    "generation": {},
                    "sizes": {},
                }
                results["backends"]["postgresql"] = run
                log(f"PostgreSQL {run['server']['server_version']}: {run['server']}")
                run["generation"] = generate_data("postgresql", PG_SIZES, server.url)
                for size in PG_SIZES:
                    run["sizes"][size] = bench_size(
                        "postgresql", size, {**run["generation"][size], **generate.grid(size)}
                    )
    finally:
        PROCS.stop_all()
        results["wall_seconds"] = round(time.perf_counter() - wall, 1)
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
        log(f"results: {out.relative_to(ROOT)} (logs: {LOGS.relative_to(ROOT)}/)")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
