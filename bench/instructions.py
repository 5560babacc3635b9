"""Instructions per request, counted by valgrind's cachegrind: a request's cost that does not
move with the machine's load, as req/s on a shared VM does (docs/performance.md,
"Instructions per request"). `make bench-instructions`; needs valgrind (Debian: valgrind).

Each server runs under cachegrind twice, side by side: one answers the warm-up and then
BENCH_INSTRUCTIONS_REQUESTS (default 500) more requests, one only the warm-up, on one
keep-alive connection each; both are stopped together. The difference of their counts, over
the requests, is one request's instructions: start-up, warm-up and idle ticks cancel out.

- hello: the bare Starlette hello-world (bench/hello.py), served by uvicorn as run.py does;
- page: the app (`python -m app serve`) on the benchmark's SQLite file (BENCH_SIZE, default
  1m), asked run.py's filtered 50-row pages, each URL once, so none is cached;
- cached page: the same, 50 URLs asked over and over, all served by the response cache;
- floor: the same pages read in-process with the sqlite3 module, zipped into dicts and encoded
  by orjson, with no web stack: what a Python server must at least do for one;
- statement: the floor's statement alone, its rows fetched as tuples and nothing more.

It prints a table and writes bench/results/instructions-<timestamp>.json.
"""

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import generate  # noqa: E402  (bench/generate.py)

REQUESTS = int(os.environ.get("BENCH_INSTRUCTIONS_REQUESTS", "500"))
SIZE = generate.size_key(os.environ.get("BENCH_SIZE", "1m"))
WARMUP = 50
CACHEGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
REFS = re.compile(rb"I\s+refs:\s+([\d,]+)")
# `+o.period`: read in id order from the (indicator, city) index, as the app reads it.
FLOOR_SQL = """SELECT o.id, o.city_code, o.indicator_code, o.period, o.value, o.value_text,
  o.qualifier, o.is_derived, o.formula, o.source_id, o.quote, o.note, o.version, i.unit_code,
  i.dimension_code
FROM observation o JOIN indicator i ON i.code = o.indicator_code
WHERE o.deleted_at IS NULL AND o.city_code = ? AND o.indicator_code = ? AND +o.period <= ?
ORDER BY o.id LIMIT 51"""


def page_urls(meta: dict[str, Any]) -> list[str]:
    """run.py's page URLs (city, indicator, year_to the last year), in a fixed random order."""
    year = generate.YEARS[-1]
    urls = [
        f"/api/v1/observations?city={c}&indicator={i}&year_to={year}&limit=50"
        for c in meta["cities"]
        for i in meta["indicators"]
    ]
    random.Random(1).shuffle(urls)
    return urls


def counted(cmd: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], Any]:
    out = log.open("wb")
    proc = subprocess.Popen([*CACHEGRIND, *cmd], cwd=ROOT, env=env, stdout=out, stderr=out)
    return proc, out


def instructions(log: Path) -> int:
    found = REFS.findall(log.read_bytes())
    if not found:
        raise RuntimeError(
            f"no instruction count in {log}:\n{log.read_text(errors='replace')[-2000:]}"
        )
    return int(found[-1].replace(b",", b""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(port: int, paths: list[str]) -> None:
    connection = HTTPConnection("127.0.0.1", port, timeout=600)
    for path in paths:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status}")
    connection.close()


def wait_ready(port: int, probe: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 900  # start-up under valgrind takes a minute or two
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            ask(port, [probe])
            return
        except (OSError, RuntimeError):
            time.sleep(0.5)
    raise RuntimeError(f"no answer on {probe} within 900 s")


def server_cost(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    probe: str,
    warmup: list[str],
    paths: list[str],
    logs: Path,
) -> int:
    """One request's instructions: (warm-up + paths) minus warm-up alone, over len(paths)."""
    runs = []
    for label, asked in (("measured", paths), ("baseline", [])):
        port = free_port()
        log = logs / f"{name}-{label}.log"
        command = [c.replace("{port}", str(port)) for c in cmd]
        proc, out = counted(command, env, log)
        runs.append((port, proc, out, log, asked))
    try:
        for port, proc, _, log, _ in runs:
            wait_ready(port, probe, proc, log)
        threads = [
            threading.Thread(target=ask, args=(port, warmup + asked))
            for port, _, _, _, asked in runs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for _, proc, _, _, _ in runs:
            proc.send_signal(signal.SIGINT)
        for _, proc, out, _, _ in runs:
            proc.wait(timeout=300)
            out.close()
    measured, baseline = (instructions(log) for _, _, _, log, _ in runs)
    return round((measured - baseline) / len(paths))


def floor(db: Path, urls: list[str], encode: bool) -> None:
    """In-process: each page read, then (`encode`) zipped into dicts and encoded by orjson
    (run under cachegrind by floor_cost)."""
    from urllib.parse import parse_qs, urlsplit

    import orjson

    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    cursor = connection.cursor()
    for url in urls:
        q = parse_qs(urlsplit(url).query)
        rows = cursor.execute(
            FLOOR_SQL, (q["city"][0], q["indicator"][0], int(q["year_to"][0]))
        ).fetchall()
        if not encode:
            continue
        names = [d[0] for d in cursor.description]
        items = [dict(zip(names, r, strict=True)) for r in rows[:50]]
        orjson.dumps({"items": items, "total": len(items), "limit": 50, "next": None})


def floor_cost(db: Path, urls: list[str], logs: Path, encode: bool = True) -> int:
    counts = []
    name = "floor" if encode else "statement"
    for label, count in (("measured", len(urls)), ("baseline", 0)):
        log = logs / f"{name}-{label}.log"
        cmd = [sys.executable, __file__, f"--{name}", str(db), str(count)]
        proc, out = counted(cmd, dict(os.environ), log)
        proc.wait()
        out.close()
        counts.append(instructions(log))
    return round((counts[0] - counts[1]) / len(urls))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] in ("--floor", "--statement"):
        db, count = Path(sys.argv[2]), int(sys.argv[3])
        urls = page_urls(generate.ensure(SIZE))[WARMUP : WARMUP + count]
        floor(db, urls, encode=sys.argv[1] == "--floor")
        return
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        raise SystemExit("valgrind is needed (Debian: apt-get install valgrind)")
    meta = generate.ensure(SIZE)
    db = generate.db_path(SIZE)
    urls = page_urls(meta)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    logs = BENCH / "results" / f"instructions-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    hello = [
        python,
        "-m",
        "uvicorn",
        "hello:app",
        "--app-dir",
        str(BENCH),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
        "--loop",
        "asyncio",
    ]
    app = [python, "-m", "app", "serve", "--host", "127.0.0.1", "--port", "{port}"]
    app_env = {**os.environ, "DATABASE_URL": generate.sqlite_url(db), "LOG_LEVEL": "warning"}
    warm, fresh = urls[:WARMUP], urls[WARMUP : WARMUP + REQUESTS]
    print(f"[instructions] {REQUESTS} requests per scenario, {SIZE} SQLite", file=sys.stderr)
    costs = {
        "hello": server_cost(
            "hello", hello, dict(os.environ), "/", ["/"] * WARMUP, ["/"] * REQUESTS, logs
        ),
        "page": server_cost("page", app, app_env, "/healthz", warm, fresh, logs),
        "cached page": server_cost(
            "cached",
            app,
            app_env,
            "/healthz",
            warm,
            [warm[i % WARMUP] for i in range(REQUESTS)],
            logs,
        ),
        "floor": floor_cost(db, fresh, logs),
        "statement": floor_cost(db, fresh, logs, encode=False),
    }
    hello_cost = costs["hello"]
    print("| per request | instructions | ÷ hello-world |\n|---|---:|---:|")
    for name, cost in costs.items():
        print(f"| {name} | {cost:,} | {cost / hello_cost:.1f} |")
    print()
    for part in ("floor", "statement"):
        ceiling = hello_cost / (hello_cost + costs[part])
        print(
            f"A page that cost only the hello-world plus the {part}: {ceiling:.3f} of the "
            "hello-world's rate by instructions."
        )
    print(f"Ours: {hello_cost / costs['page']:.3f}.")
    out = BENCH / "results" / f"instructions-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "started": stamp,
                "size": SIZE,
                "requests": REQUESTS,
                "instructions_per_request": costs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"[instructions] wrote {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
