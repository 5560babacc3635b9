"""The load test behind `make load` (docs/performance.md, "Mixed load"): LOAD_CONNECTIONS (64)
clients for LOAD_SECONDS (60) against `python -m app serve` on loopback, 90% reads and 10%
curator writes (bench/load.lua: POST, PATCH of a note, DELETE). It passes only with no socket
error, no timeout, no answer outside 2xx/3xx, no traceback in the server's log, a server still
healthy afterwards, and every answered write found in the audit log with its revision.

For each backend (LOAD_BACKENDS, default sqlite,postgresql) it makes a fresh database (SQLite: a
temporary file; PostgreSQL: a new database on LOAD_DATABASE_URL's or TEST_POSTGRES_URL's server,
or on a throwaway one from .ci/postgres, skipped loudly if none starts), runs `python -m app
migrate`, `seed` and `keys create`, and serves it with RATE_LIMIT_WRITES empty (wrk is one
client). Knobs: LOAD_SECONDS, LOAD_CONNECTIONS, LOAD_WRITE_SHARE (0.10), LOAD_TIMEOUT (10 s),
LOAD_BACKENDS, LOAD_DATABASE_URL. Results: bench/results/<UTC timestamp>-load.json.
"""

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate
import run

SECONDS = int(os.environ.get("LOAD_SECONDS", "60"))
CONNECTIONS = int(os.environ.get("LOAD_CONNECTIONS", "64"))
WRITE_SHARE = float(os.environ.get("LOAD_WRITE_SHARE", "0.10"))
run.WRK_TIMEOUT_S = int(os.environ.get("LOAD_TIMEOUT", "10"))  # unanswered this long: timeout
BACKENDS = [b.strip() for b in os.environ.get("LOAD_BACKENDS", "sqlite,postgresql").split(",")]
SERVER_URL = os.environ.get("LOAD_DATABASE_URL") or os.environ.get("TEST_POSTGRES_URL")
CURATOR = "load-curator"
API = "/api/v1"


def log(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scalars(url: str, sql: str) -> tuple[Any, ...]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text(sql)).one())
    finally:
        engine.dispose()


def every(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    """Every item of a collection, following `next` cursors."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        body = client.get(path, params=params).raise_for_status().json()
        items += body["items"]
        if body["next"] is None:
            return items
        params["cursor"] = body["next"]


def second_page(client: httpx.Client, path: str, **params: Any) -> list[str]:
    """`path` with `params`, and its next page if it has one."""
    first = f"{path}?{urlencode(params)}"
    cursor = client.get(first).raise_for_status().json()["next"]
    return [first] + ([f"{first}&cursor={cursor}"] if cursor else [])


def read_paths(client: httpx.Client) -> list[str]:
    """The public GET endpoints over the seeded codes; every city + indicator pair's page, so
    observations filtered by both are the most common read."""
    cities = [c["code"] for c in every(client, f"{API}/cities")]
    indicators = [i["code"] for i in every(client, f"{API}/indicators")]
    dimensions = [d["code"] for d in client.get(f"{API}/dimensions").json()["items"]]
    sources = [s["id"] for s in every(client, f"{API}/sources")]
    observations = [o["id"] for o in every(client, f"{API}/observations")]
    obs = f"{API}/observations"
    return [
        f"{API}/cities",
        *second_page(client, f"{API}/cities", limit=2),
        *(f"{API}/cities/{c}" for c in cities),
        f"{API}/indicators",
        *second_page(client, f"{API}/indicators", limit=10),
        *(f"{API}/indicators?dimension={d}" for d in dimensions),
        *(f"{API}/indicators/{i}" for i in indicators),
        f"{API}/dimensions",
        *(f"{API}/dimensions/{d}" for d in dimensions),
        f"{API}/sources",
        *(f"{API}/sources/{s}" for s in sources),
        obs,
        f"{obs}?year_from=2020&year_to=2023",
        *(p for c in cities for p in second_page(client, obs, city=c, limit=5)),
        *(f"{obs}?indicator={i}" for i in indicators),
        *(f"{obs}?city={c}&indicator={i}&limit=20" for c in cities for i in indicators),
        *(f"{obs}?city={c}&latest=true" for c in cities),
        *(f"{obs}?dimension={d}&latest=true" for d in dimensions),
        *(f"{obs}/{o}" for o in observations),
        *(f"{obs}/{o}/history" for o in observations),
        *(f"{obs}.csv?city={c}" for c in cities),
        *(f"{obs}.csv?city={c}&indicator={i}" for c in cities for i in indicators[:3]),
    ]


def new_keys(client: httpx.Client) -> tuple[list[str], int]:
    """`city indicator period` lines no observation has, in random order, and the source
    they cite: POSTs of them cannot conflict."""
    source = every(client, f"{API}/sources")[0]["id"]
    taken = {
        (o["city_code"], o["indicator_code"], o["period"])
        for o in every(client, f"{API}/observations")
    }
    cities = [c["code"] for c in every(client, f"{API}/cities")]
    indicators = [i["code"] for i in every(client, f"{API}/indicators")]
    lines = [
        f"{c} {i} {p}"
        for p in range(1900, 2201)
        for c in cities
        for i in indicators
        if (c, i, p) not in taken
    ]
    random.Random(6).shuffle(lines)
    return lines, source


def preflight(client: httpx.Client, paths: list[str]) -> None:
    """Every read answers 200 with an ETag before the load starts: load.lua takes a 200
    without one for a PATCH."""
    for path in paths:
        r = client.get(path)
        if r.status_code != 200 or "etag" not in r.headers:
            raise RuntimeError(f"GET {path}: {r.status_code}, ETag {r.headers.get('etag')}")


def write_counts(url: str) -> dict[str, int]:
    """What the database holds of the curator's writes, in one statement (one snapshot): audit
    events per action, the revisions (versions) the curator wrote, and live observations."""
    counts = {
        f"audit_{action}": f"select count(*) from audit_event where actor = '{CURATOR}' "
        f"and action = '{action}'"
        for action in ("create", "update", "delete")
    }
    counts["revisions"] = (
        f"select count(*) from observation_revision where changed_by = '{CURATOR}'"
    )
    counts["live"] = "select count(*) from observation where deleted_at is null"
    values = scalars(url, "select " + ", ".join(f"({q})" for q in counts.values()))
    return dict(zip(counts, map(int, values), strict=True))


def settled_counts(url: str, quiet_s: float = 1.0, limit_s: float = 60) -> dict[str, int]:
    """write_counts once they stop changing: writes wrk sent before it stopped may still be
    queued in the server, and are committed after it has stopped counting."""
    counts, deadline = write_counts(url), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        if (latest := write_counts(url)) == counts:
            break
        counts = latest
    return counts


def load_backend(backend: str, url: str, folder: Path, seconds: int) -> dict[str, Any]:
    """One load run on a fresh database at `url`; its figures and what failed."""
    generate.cli(url, "migrate")
    generate.cli(url, "seed")
    key = generate.cli(url, "keys", "create", "--name", CURATOR, "--scope", "write").strip()
    with run.app_server(url, f"load-{backend}", RATE_LIMIT_WRITES="") as server:
        client = httpx.Client(base_url=server.base, timeout=30)
        paths = read_paths(client)
        keys, source = new_keys(client)
        preflight(client, paths)
        patch_ids = [o["id"] for o in every(client, f"{API}/observations")]
        (folder / f"{backend}.keys").write_text("\n".join(keys) + "\n")
        env = {
            "LOAD_KEY": key,
            "LOAD_WRITE_SHARE": str(WRITE_SHARE),
            "LOAD_PATCH_IDS": ",".join(map(str, patch_ids)),
            "LOAD_NEW_KEYS": str(folder / f"{backend}.keys"),
            "LOAD_SOURCE_ID": str(source),
            "LOAD_THREADS": str(min(run.THREADS, CONNECTIONS)),
        }
        before = write_counts(url)
        log(f"{backend}: {CONNECTIONS} connections for {seconds} s, {len(set(paths))} read URLs, "
            f"{WRITE_SHARE:.0%} writes")  # fmt: skip
        result = run.wrk(server.base, paths, CONNECTIONS, seconds, "load.lua", env)
        after = settled_counts(url)
        result["database"] = {k: after[k] - before[k] for k in after}
        result["live_observations"] = {
            "before": before["live"],
            "after": after["live"],
            "api_after": client.get(f"{API}/observations?limit=1").json()["total"],
        }
        result["healthy_after"] = (
            server.proc.poll() is None and client.get("/healthz").status_code == 200
        )
        result["server_tracebacks"] = server.tracebacks()
        client.close()
    result["problems"] = problems(result)
    c = result["load"]["counts"]
    log(f"{backend}: {result['rps']:,.0f} req/s, p50 {result['p50_ms']} ms, p99 "
        f"{result['p99_ms']} ms, max {result['max_ms']} ms; writes answered (POST/PATCH/DELETE) "
        + "/".join(str(c.get(f"ok_{a}", 0)) for a in ("create", "update", "delete")))  # fmt: skip
    return result


def run_sqlite(seconds: int) -> dict[str, Any]:
    """The SQLite run on a fresh temporary file (bench/run.py's mixed-load measure)."""
    with tempfile.TemporaryDirectory(prefix="xinzhi-load-") as tmp:
        return load_backend("sqlite", f"sqlite:///{tmp}/load.db", Path(tmp), seconds)


def run_postgres(folder: Path) -> dict[str, Any] | None:
    """The PostgreSQL run on a fresh database, or None (said loudly) if no server starts."""
    try:
        with run.postgres(SERVER_URL) as server_url:
            name = f"xz_load_{os.getpid()}"
            generate.server_sql(
                server_url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"
            )
            try:
                url = generate.with_database(server_url, name)
                return load_backend("postgresql", url, folder, SECONDS)
            finally:
                generate.server_sql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except RuntimeError as exc:
        if "PostgreSQL" not in str(exc):
            raise
        log(f"!! PostgreSQL skipped: {exc}")
        return None


def problems(r: dict[str, Any]) -> list[str]:
    """Everything that fails the run."""
    c, db = r["load"]["counts"], r["database"]
    found = []
    for name in ("socket_errors", "timeouts", "non_2xx", "server_tracebacks"):
        if r[name]:
            found.append(f"{r[name]} {name.replace('_', ' ')}")
    if r["load"]["failures"]:
        found.append(
            f"answers outside 2xx/3xx: {r['load']['failures']}; first: {c['first_failure']}"
        )
    if not r["healthy_after"]:
        found.append("the server was not healthy afterwards")
    if c.get("create_without_location"):
        found.append(f"{c['create_without_location']} 201s without a Location")
    for action in ("create", "update", "delete"):
        ok, issued, stored = (
            c.get(f"ok_{action}", 0),
            c.get(f"issued_{action}", 0),
            db[f"audit_{action}"],
        )
        # a write sent as wrk stopped may be stored without its answer being counted
        if not ok <= stored <= issued:
            found.append(f"{action}: {ok} answered 2xx, {stored} in the audit log, {issued} sent")
    audited = db["audit_create"] + db["audit_update"] + db["audit_delete"]
    if db["revisions"] != audited:
        found.append(f"{db['revisions']} revisions for {audited} audited writes")
    live = r["live_observations"]
    if not live["api_after"] == live["after"] == live["before"] + db["live"]:
        found.append(f"live observations {live} do not add up")
    if db["live"] != db["audit_create"] - db["audit_delete"]:
        found.append(
            f"{db['live']} more live observations for {db['audit_create']} creates, "
            f"{db['audit_delete']} deletes"
        )
    return found


def main() -> int:
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started": run.STAMP, "machine": run.machine(), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="xinzhi-load-") as tmp:
        try:
            if "sqlite" in BACKENDS:
                url = f"sqlite:///{tmp}/load.db"
                results["backends"]["sqlite"] = load_backend("sqlite", url, Path(tmp), SECONDS)
            if "postgresql" in BACKENDS:
                results["backends"]["postgresql"] = run_postgres(Path(tmp))
        finally:
            out = run.RESULTS / f"{run.STAMP}-load.json"
            out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
            log(f"results: {out.relative_to(run.ROOT)}")
    failed = [
        f"{backend}: {problem}"
        for backend, r in results["backends"].items()
        if r is not None
        for problem in r["problems"]
    ]
    for problem in failed:
        log(f"FAILED on {problem}")
    log("FAILED" if failed else "passed: no errors, no 5xx, every write stored")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
