"""Bulk CSV import: the export's format, all or nothing, every error by line and column."""

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.config import Settings
from app.main import create_app
from tests.conftest import Keys
from tests.factories import IMPORT_HEADER as HEADER

pytestmark = pytest.mark.anyio

URL = "/api/v1/observations/import"
CSV_HEADERS = {"Content-Type": "text/csv"}
GOOD = "hangzhou,sei_va_share_gdp,percent,2023,33.1,33.1%,exact,false,,,1,a quote,"


def body(*lines: str, newline: str = "\r\n") -> bytes:
    return newline.join([HEADER, *lines, ""]).encode()


async def post(client: httpx.AsyncClient, keys: Keys, data: bytes, **params: Any) -> httpx.Response:
    return await client.post(
        URL,
        content=data,
        params={"reason": "import test", **params},
        headers={**keys.write, **CSV_HEADERS},
    )


def dump(client: httpx.AsyncClient) -> list[tuple[Any, ...]]:
    app = client._transport.app  # type: ignore[attr-defined]
    with app.state.engine.connect() as conn:
        return [
            tuple(r)
            for t in ("observation", "observation_revision", "derivation", "audit_event")
            for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))
        ]


async def test_edited_export_imports_back(client: httpx.AsyncClient, keys: Keys) -> None:
    exported = (await client.get("/api/v1/observations.csv")).text
    rows = list(csv.DictReader(io.StringIO(exported, newline="")))
    for row in rows:
        if row["indicator_code"] == "sei_va_share_gdp":
            row["value"], row["value_text"] = "42", "42%"
    rows.append({**rows[0], "id": "", "city_code": "hangzhou"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    response = await post(client, keys, out.getvalue().encode())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "dry_run": False,
        "rows": 31,
        "added": 1,
        "updated": 1,
        "unchanged": 29,
    }
    changed = (
        await client.get("/api/v1/observations", params={"indicator": "sei_va_share_gdp"})
    ).json()["items"][0]
    assert (changed["value"], changed["version"]) == (42.0, 2)
    history = (await client.get(f"/api/v1/observations/{changed['id']}/history")).json()["items"]
    assert [(h["value"], h["changed_by"], h["reason"]) for h in history][1:] == [
        (42.0, "alice", "import test")
    ]
    # the derived row came back with its inputs, named by key
    ningbo = (
        await client.get(
            "/api/v1/observations", params={"city": "ningbo", "indicator": "nev_output"}
        )
    ).json()["items"][0]
    assert (ningbo["version"], len(ningbo["derived_from"])) == (1, 2)
    again = await post(client, keys, out.getvalue().encode())
    assert again.json() == {"dry_run": False, "rows": 31, "added": 0, "updated": 0, "unchanged": 31}


async def test_dry_run_writes_nothing(client: httpx.AsyncClient, keys: Keys) -> None:
    before = dump(client)
    response = await post(client, keys, body(GOOD), dry_run="true")
    assert response.json() == {"dry_run": True, "rows": 1, "added": 1, "updated": 0, "unchanged": 0}
    assert dump(client) == before


async def test_one_bad_last_row_rejects_the_file(client: httpx.AsyncClient, keys: Keys) -> None:
    before = dump(client)
    good_rows = [GOOD.replace("2023", str(year)) for year in range(2000, 2020)]
    response = await post(client, keys, body(*good_rows, GOOD.replace("exact", "roughly")))
    assert response.status_code == 422
    problem = response.json()
    assert problem["detail"] == "The file was not imported: 1 error(s); nothing was written."
    assert [(e["line"], e["column"]) for e in problem["errors"]] == [(22, "qualifier")]
    assert dump(client) == before


async def test_every_error_is_listed_by_line_and_column(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    lines = [
        GOOD.replace("hangzhou", "atlantis"),
        GOOD.replace("percent", "vehicles").replace("2023", "2022"),
        GOOD.replace("2023,33.1", "2021,x"),
        GOOD.replace("2023", "2020").replace("false,,", "true,a / b,hangzhou/gdp/2019"),
        GOOD,
        GOOD,
        GOOD.replace(",1,a quote", ",7,a quote").replace("2023", "2019"),
    ]
    response = await post(client, keys, body(*lines))
    assert response.status_code == 422
    errors = [(e["line"], e["column"]) for e in response.json()["errors"]]
    assert errors == [
        (2, "city_code"),
        (3, "unit_code"),
        (4, "value"),
        (5, "derived_from"),
        (7, "city_code"),
        (8, "source_id"),
    ]


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (b"\xef\xbb\xbf" + body(GOOD), 200, '"added":1'),
        (body(GOOD, newline="\n"), 200, '"added":1'),
        (body(GOOD.replace("a quote", "'=1+2")), 200, '"added":1'),
        (b"city_code,value\r\nningbo,1\r\n", 422, "required column is missing"),
        (body(GOOD).replace(b"note", b"notes"), 422, "unknown column"),
        (body(GOOD).replace(b"hangzhou", b"\xff\xfe"), 422, "not UTF-8"),
        (body(GOOD + ",extra"), 422, "expected 13 cells"),
        (HEADER.encode(), 200, '"rows":0'),
    ],
)
async def test_file_formats(
    client: httpx.AsyncClient, keys: Keys, data: bytes, status: int, needle: str
) -> None:
    response = await post(client, keys, data)
    assert response.status_code == status, response.text
    assert needle in response.text.replace(" ", "") or needle in response.text


async def test_formula_guard_comes_off_on_import(client: httpx.AsyncClient, keys: Keys) -> None:
    await post(client, keys, body(GOOD.replace("a quote", "'=1+2")))
    row = (await client.get("/api/v1/observations", params={"city": "hangzhou"})).json()["items"][0]
    assert row["quote"] == "=1+2"


async def test_rows_may_derive_from_rows_of_the_same_file(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    derived = "hangzhou,sei_va,cny_100m,2023,6000,≈6000,approximately,true,share * gdp,hangzhou/sei_va_share_gdp/2023,1,a quote,"
    response = await post(client, keys, body(derived, GOOD))
    assert response.json()["added"] == 2
    rows = (await client.get("/api/v1/observations", params={"city": "hangzhou"})).json()["items"]
    by_code = {r["indicator_code"]: r for r in rows}
    assert by_code["sei_va"]["derived_from"] == [by_code["sei_va_share_gdp"]["id"]]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Content-Type": "application/json"}, 415), ({}, 401)],
)
async def test_import_needs_csv_and_a_key(
    client: httpx.AsyncClient, keys: Keys, headers: dict[str, str], status: int
) -> None:
    auth = keys.write if status != 401 else {}
    response = await client.post(
        URL, content=body(GOOD), params={"reason": "x" * 3}, headers={**auth, **headers}
    )
    assert response.status_code == status


@pytest.fixture
async def small_client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=db_url, import_max_bytes=400, import_max_rows=2))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c
    app.state.engine.dispose()
    app.state.write_engine.dispose()


async def test_size_and_row_limits(small_client: httpx.AsyncClient, keys: Keys) -> None:
    too_big = await post(small_client, keys, body(*[GOOD] * 5))
    assert too_big.status_code == 413
    assert too_big.headers["content-type"] == "application/problem+json"
    assert "at most 400" in too_big.json()["detail"]
    too_many = await post(
        small_client, keys, body(GOOD, GOOD.replace("2023", "2022"), GOOD.replace("2023", "2021"))
    )
    assert too_many.status_code == 422
    assert "more than 2 rows" in too_many.text
