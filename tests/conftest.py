"""Every test gets a fresh, migrated and seeded database: the migration and seed run once per
session into a template, which each test copies (a SQLite file copy, or on PostgreSQL a
`CREATE DATABASE ... TEMPLATE`).

The suite runs on SQLite by default. With TEST_POSTGRES_URL set (a URL to the server's
`postgres` database, as .ci/run sets it), every database is created on that PostgreSQL server.
"""

import contextlib
import csv
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session, select

from app.caching import ConditionalGet
from app.config import ROOT, Settings
from app.main import create_app
from app.models import City, Derivation, Observation
from app.schema import migrate
from app.seed import load_seed

# Rate limits are tested in test_limits.py, with limits of their own. Anywhere else they would
# only make a test's outcome depend on how fast it runs. (Servers started here inherit this.)
os.environ["RATE_LIMIT_WRITES"] = ""

SEED_DIR = ROOT / "seed"
ARTICLE = SEED_DIR / "source-article-ningbo-liu-shanghai.txt"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def seed_rows(name: str) -> list[dict[str, str]]:
    with (SEED_DIR / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


TEST_POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
BACKEND = "postgresql" if TEST_POSTGRES_URL else "sqlite"
sqlite_only = pytest.mark.skipif(BACKEND != "sqlite", reason="about SQLite itself")
postgresql_only = pytest.mark.skipif(BACKEND != "postgresql", reason="about PostgreSQL itself")


class Databases:
    """Creates and drops the suite's databases on the backend under test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names = itertools.count()

    def url(self, name: str) -> str:
        if TEST_POSTGRES_URL is None:
            return sqlite_url(self.folder / f"{name}.db")
        return make_url(TEST_POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def _server(self, sql: str) -> None:
        assert TEST_POSTGRES_URL is not None
        engine = create_engine(TEST_POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as conn:
            conn.execute(text(sql))
        engine.dispose()

    def create(self, prefix: str, template: str | None = None) -> str:
        """A new database, empty or a copy of `template` (a name create returned the URL of)."""
        name = f"xz_{prefix}_{os.getpid()}_{next(self.names)}"
        if TEST_POSTGRES_URL is None:
            if template is not None:
                shutil.copyfile(self.folder / f"{template}.db", self.folder / f"{name}.db")
        else:
            self._server(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.url(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        if TEST_POSTGRES_URL is not None and name:
            self._server(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Databases:
    return Databases(tmp_path_factory.mktemp("databases"))


@pytest.fixture(scope="session")
def template_db(databases: Databases) -> Iterator[str]:
    """The name of a migrated, seeded database that each test copies."""
    url = databases.create("template")
    migrate(url)
    from app.db import make_engine

    engine = make_engine(Settings(database_url=url))
    load_seed(engine, SEED_DIR)
    if BACKEND == "sqlite":
        with engine.connect() as conn:  # fold the WAL into the file so a copy is complete
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()  # PostgreSQL copies a template only while nobody is connected to it
    name = make_url(url).database or ""
    yield Path(name).stem
    databases.drop(url)


@pytest.fixture
def db_url(databases: Databases, template_db: str) -> Iterator[str]:
    url = databases.create("test", template=template_db)
    yield url
    databases.drop(url)


@pytest.fixture
def empty_db_url(databases: Databases) -> Iterator[str]:
    """A database with no tables yet (on SQLite, a file that does not exist yet)."""
    url = databases.create("empty")
    yield url
    databases.drop(url)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.engine.dispose()
    application.state.write_engine.dispose()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def conditional_get(app: FastAPI) -> ConditionalGet:
    """The app's ConditionalGet middleware (app/caching.py), once a request has built the
    middleware stack."""
    layer = app.middleware_stack
    while not isinstance(layer, ConditionalGet):
        layer = getattr(layer, "app")  # noqa: B009  (each layer's inner app)
    return layer


async def get_all(client: httpx.AsyncClient, url: str, **params: Any) -> list[dict[str, Any]]:
    """Follows `next` cursors to the end and returns every item."""
    items: list[dict[str, Any]] = []
    params = {"limit": 500, **params}
    while True:
        response = await client.get(url, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if body["next"] is None:
            return items
        params["cursor"] = body["next"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    database_url: str
    process: subprocess.Popen[bytes]


def run_cli(
    *args: str, database_url: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m app ARGS` with only DATABASE_URL, PATH and `env` in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_server(
    database_url: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> LiveServer:
    """`python -m app serve ARGS` on a free loopback port; returns once /healthz answers."""
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "warning",
        **(env or {}),
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers are stopped with it
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return LiveServer(url=url, database_url=database_url, process=process)
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            kill_group(process)
            raise RuntimeError(f"server did not start:\n{log.read_text()}")
        time.sleep(0.1)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the server and any worker it left behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    finally:
        kill_group(server.process)


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, databases: Databases
) -> Iterator[LiveServer]:
    """The path a newcomer takes: migrate, seed the empty database, serve with uvicorn, over
    a SQLite file in a folder that does not exist yet (as data/ on a fresh clone), or over an
    empty PostgreSQL database."""
    folder = tmp_path_factory.mktemp("live")
    if BACKEND == "sqlite":
        url = sqlite_url(folder / "data" / "live.db")
    else:
        url = databases.create("live")
    server = start_server(url, folder / "server.log")
    yield server
    stop_server(server)
    databases.drop(url)


@dataclass
class Keys:
    """Headers for each kind of API key, created in the test's database."""

    write: dict[str, str]
    admin: dict[str, str]
    read: dict[str, str]
    revoked: dict[str, str]


@pytest.fixture
def keys(app: FastAPI) -> Keys:
    from app.auth import create_key, revoke_key

    engine = app.state.write_engine
    revoked = create_key(engine, "old", "write")
    revoke_key(engine, "old")
    return Keys(
        write={"X-API-Key": create_key(engine, "alice", "write")},
        admin={"Authorization": f"Bearer {create_key(engine, 'root', 'admin')}"},
        read={"X-API-Key": create_key(engine, "reader", "read")},
        revoked={"X-API-Key": revoked},
    )


# Values at the edges of what the exports and pages write: text that csv.writer quotes or
# guards or JSON escapes, control bytes inside data, and floats at the edges of repr().
TEXTS = [
    "a,b",
    'say "hi"',
    "two\nlines",
    "cr\rhere",
    "crlf\r\nend",
    "=1+2",
    "+1",
    "-2",
    "@SUM(A1)",
    "\tx",
    "\rx",
    "unit\x1fsep",
    "record\x1esep",
    "group\x1dsep",
    "file\x1csep",
    "sub\x1amark",
    "",
    "近五成",
    "a=b",
    "x-y",
    "back\\slash",
    "bell\x07 del\x7f",
    "line\u2028sep",
    "emoji 🚀",
]
FLOATS = [
    0.0,
    -0.0,
    1e-05,
    0.0001,
    0.1,
    1 / 3,
    0.30000000000000004,
    90.0,
    -12.5,
    77.55,
    2.675,
    -0.0001,
    0.1 + 0.7,  # 0.7999999999999999: near four places, but not them; 15 digits do not read back
    123456789.12345,  # five places: read back, without the four-places shortcut
    99999999999.9999,  # the most four places can have under 1e11
    100000000000.5,
    123456789012.3456,  # four places, 16 digits: 15 do not read back
    1e14,
    123456789012345.6,
    999999999999999.9,
    1e15,
    1e16,
    1.7976931348623157e308,
    5e-324,
    -2.5e-07,
]

EDGE_ROWS = len(TEXTS) + len(FLOATS) + 2  # and two derived: from two of them, from none


@pytest.fixture
def edge_rows(app: FastAPI) -> None:
    def row(period: int, value: float = 1.5, text: str = "plain") -> Observation:
        return Observation(
            city_code="hangzhou",
            indicator_code="ic_output_growth_5y",
            period=period,
            value=value,
            value_text=text,
            qualifier="exact",
            source_id=1,
            quote=text,
            note=text,
        )

    with Session(app.state.engine) as session, session.begin():
        session.add_all(row(1900 + i, text=t) for i, t in enumerate(TEXTS))
        session.add_all(row(1950 + i, value=v) for i, v in enumerate(FLOATS))
        # derived from two of them, with a value the database prints (the seed's one is not)
        derived = row(2001, value=3.0)
        derived.is_derived, derived.formula = True, "a + b"
        session.add(derived)
        session.flush()
        inputs = session.exec(
            select(Observation.id).where(Observation.period.in_((1900, 1901)))  # type: ignore[attr-defined]
        ).all()
        session.add_all(Derivation(observation_id=derived.id, input_id=i) for i in inputs)
        unlinked = row(2002, value=4.0)  # derived, its inputs not recorded: derived_from []
        unlinked.is_derived, unlinked.formula = True, "c"
        session.add(unlinked)
        for code in ("=first", "-first", "plain,first"):
            session.add(
                City(
                    code=code,
                    name_zh="城市",
                    name_en="City",
                    province_zh="浙江",
                    province_en="Zhejiang",
                    admin_level="prefecture",
                )
            )
