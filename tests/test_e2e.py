"""End to end: the real server under uvicorn on a loopback port, and the CLI."""

import asyncio
import csv
import io
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKEND, LiveServer, run_cli

pytestmark = pytest.mark.e2e


def test_served_over_real_http(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        assert http.get("/healthz").json() == {"status": "ok", "database": "ok"}
        body = http.get("/api/v1/observations", params={"city": "shenzhen", "limit": 4}).json()
        assert (body["total"], len(body["items"])) == (12, 4)
        assert http.get("/api/v1/cities/ningbo").json()["name_zh"] == "宁波"
        missing = http.get("/api/v1/indicators/gdp")
        assert (missing.status_code, missing.headers["content-type"]) == (
            404,
            "application/problem+json",
        )


def test_csv_streams_over_real_http(live_server: LiveServer) -> None:
    with httpx.stream(
        "GET", f"{live_server.url}/api/v1/observations.csv", params={"bom": "true"}
    ) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers  # streamed, not buffered
        raw = response.read()
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert len(rows) == 30


def test_docs_and_their_assets_are_served_locally(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        for page, assets in (
            (
                "/docs",
                [
                    "/static-offline-docs/swagger-ui-bundle.js",
                    "/static-offline-docs/swagger-ui.css",
                ],
            ),
            ("/redoc", ["/static-offline-docs/redoc.standalone.js"]),
        ):
            html = http.get(page).text
            assert "cdn" not in html.lower()
            for asset in assets:
                assert asset in html
                response = http.get(asset)
                assert response.status_code == 200
                assert len(response.content) > 100_000


def test_cli_migrate_seed_export(tmp_path: Path, empty_db_url: str) -> None:
    # SQLite: in a folder that does not exist yet, as data/ on a fresh clone
    url = f"sqlite:///{tmp_path}/new-folder/cli.db" if BACKEND == "sqlite" else empty_db_url
    assert run_cli("migrate", database_url=url).returncode == 0
    seeded = run_cli("seed", "--dir", "seed", database_url=url)
    assert "observations.csv: 30 added, 0 updated, 0 unchanged" in seeded.stderr
    again = run_cli("seed", database_url=url)
    assert "observations.csv: 0 added, 0 updated, 30 unchanged" in again.stderr
    exported = run_cli("export", "--city", "hefei", database_url=url)
    rows = list(csv.DictReader(io.StringIO(exported.stdout, newline="")))
    assert [r["indicator_code"] for r in rows] == [
        "national_lab_count",
        "big_science_facility_count",
        "global_research_city_rank",
        "national_innovative_city_rank",
        "sei_output_share_industrial_output",
    ]
    out = tmp_path / "indicators.csv"
    assert (
        run_cli("export", "indicators", "--bom", "-o", str(out), database_url=url).returncode == 0
    )
    assert out.read_bytes().startswith(b"\xef\xbb\xbfcode,name_zh")
    bad = run_cli("export", "--city", "atlantis", database_url=url)
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "export failed: Unknown city 'atlantis'. List the valid codes at /api/v1/cities.",
    )


@pytest.mark.anyio
async def test_64_concurrent_connections_all_answer(live_server: LiveServer) -> None:
    """SQLAlchemy's default pool (5 + 10) stalls a sync endpoint at 64 connections; ours is sized
    to the thread pool, so every request gets a connection."""
    urls = [
        f"/api/v1/observations?city={city}&limit={limit}"
        for city in ("ningbo", "shenzhen", "hefei", "changzhou")
        for limit in range(1, 17)
    ] * 4
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=live_server.url, limits=limits, timeout=30) as http:
        responses = await asyncio.gather(*(http.get(url) for url in urls))
    assert len(responses) == 256
    assert {r.status_code for r in responses} == {200}


def test_cli_keys_and_import(tmp_path: Path, empty_db_url: str) -> None:
    url = empty_db_url
    assert run_cli("migrate", database_url=url).returncode == 0
    created = run_cli("keys", "create", "--name", "bob", "--scope", "admin", database_url=url)
    assert created.returncode == 0
    assert created.stdout.startswith("xz_") and len(created.stdout.strip()) > 40
    assert (
        run_cli("keys", "create", "--name", "bob", "--scope", "write", database_url=url).returncode
        == 1
    )
    listed = run_cli("keys", "list", database_url=url).stdout
    assert listed.startswith("bob\tadmin\txz_") and listed.rstrip().endswith("active")
    assert created.stdout.strip() not in listed
    assert run_cli("keys", "revoke", "bob", database_url=url).returncode == 0
    assert "\trevoked " in run_cli("keys", "list", database_url=url).stdout
    assert run_cli("keys", "revoke", "bob", database_url=url).returncode == 1

    assert run_cli("seed", database_url=url).returncode == 0
    good = tmp_path / "good.csv"
    good.write_text(
        "city_code,indicator_code,period,value,value_text,qualifier,source_id,quote\n"
        "hangzhou,ic_output,2023,1,1,exact,1,q\n",
        encoding="utf-8",
    )
    dry = run_cli("import", str(good), "--reason", "try it", "--dry-run", database_url=url)
    assert dry.stderr.strip() == "1 rows: 1 would be added, 0 updated, 0 unchanged"
    done = run_cli("import", str(good), "--reason", "for real", database_url=url)
    assert done.stderr.strip() == "1 rows: 1 were added, 0 updated, 0 unchanged"
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text(encoding="utf-8").replace("exact", "roughly"), encoding="utf-8")
    failed = run_cli("import", str(bad), "--reason", "oops", database_url=url)
    assert failed.returncode == 1
    assert f"{bad}:2: qualifier: Input should be" in failed.stderr
