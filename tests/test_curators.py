"""Curators: API keys, every write path and its validation, history, as_of, audit, ETags."""

import csv
import hashlib
import io
import json
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.config import Settings
from app.main import create_app
from tests.conftest import BACKEND, Keys, conditional_get
from tests.factories import NEW_OBSERVATION

pytestmark = pytest.mark.anyio

REASON = {"reason": "test write"}
NEW_CITY = {
    "code": "suzhou",
    "name_zh": "苏州",
    "name_en": "Suzhou",
    "province_zh": "江苏",
    "province_en": "Jiangsu",
    "admin_level": "prefecture",
}


def now() -> str:
    time.sleep(0.002)  # keep writes and the moments between them apart
    stamp = datetime.now(UTC).isoformat()
    time.sleep(0.002)
    return stamp


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("who", "status"),
    [
        (None, 401),
        ("wrong", 401),
        ("malformed", 401),
        ("revoked", 401),
        ("read", 403),
        ("write", 201),
        ("admin", 201),
    ],
)
async def test_writes_need_a_key_with_write_scope(
    client: httpx.AsyncClient, keys: Keys, who: str | None, status: int
) -> None:
    headers = {
        None: {},
        "wrong": {"X-API-Key": "xz_00000000_not-a-real-key"},
        "malformed": {"Authorization": "Bearer nonsense"},
        "revoked": keys.revoked,
        "read": keys.read,
        "write": keys.write,
        "admin": keys.admin,
    }[who]
    response = await client.post("/api/v1/cities", json=NEW_CITY, params=REASON, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
    listed = (await client.get("/api/v1/cities")).json()["total"]
    assert listed == (6 if status == 201 else 5)


async def test_keys_are_stored_hashed(app: FastAPI, keys: Keys) -> None:
    key = keys.write["X-API-Key"]
    with app.state.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, prefix, key_hash, scope FROM api_key WHERE name = 'alice'")
        ).all()
        dump = str(conn.execute(text("SELECT * FROM api_key")).all())
    assert rows == [
        ("alice", key.split("_", 2)[1], hashlib.sha256(key.encode()).hexdigest(), "write")
    ]
    assert key not in dump
    assert key.split("_", 2)[2] not in dump


async def test_the_key_is_wrong_by_one_character(client: httpx.AsyncClient, keys: Keys) -> None:
    key = keys.write["X-API-Key"]
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    response = await client.post(
        "/api/v1/cities", json=NEW_CITY, params=REASON, headers={"X-API-Key": forged}
    )
    assert response.status_code == 401


# ---------------------------------------------------------------- reference resources

WRITES: list[tuple[str, str, Any, int, str]] = [
    # (method, url, body, status, text in the response)
    ("POST", "/api/v1/cities", NEW_CITY, 201, '"code":"suzhou"'),
    ("POST", "/api/v1/cities", {**NEW_CITY, "code": "ningbo"}, 409, "exists already"),
    ("POST", "/api/v1/cities", {**NEW_CITY, "code": "Su Zhou"}, 422, "body.code"),
    ("POST", "/api/v1/cities", {**NEW_CITY, "admin_level": "county"}, 422, "body.admin_level"),
    ("POST", "/api/v1/cities", {**NEW_CITY, "id": 7}, 422, "Extra inputs are not permitted"),
    ("PATCH", "/api/v1/cities/ningbo", {"name_en": "Ningbo City"}, 200, '"name_en":"Ningbo City"'),
    ("PATCH", "/api/v1/cities/ningbo", {"name_zh": None}, 422, "name_zh cannot be null"),
    ("PATCH", "/api/v1/cities/ningbo", {"code": "nb"}, 422, "Extra inputs are not permitted"),
    ("PATCH", "/api/v1/cities/atlantis", {"name_en": "x"}, 404, "'atlantis'"),
    ("DELETE", "/api/v1/cities/hangzhou", None, 204, ""),
    ("DELETE", "/api/v1/cities/ningbo", None, 409, "still used by observation"),
    (
        "POST",
        "/api/v1/indicators",
        {
            "code": "rd_intensity",
            "name_zh": "研发经费投入强度",
            "name_en": "R&D intensity",
            "definition": "R&D spending over GDP",
            "dimension_code": "new_drivers",
            "dimension_rationale": "R&D is the new driver",
            "unit_code": "percent",
            "basis": {"numerator": "R&D spending", "denominator": "GDP", "scope": "City; year"},
        },
        201,
        '"basis":{"numerator":"R&D spending","denominator":"GDP","scope":"City; year"}',
    ),
    ("POST", "/api/v1/indicators", {"code": "x"}, 422, "body.name_zh"),
    (
        "PATCH",
        "/api/v1/indicators/nev_output",
        {"dimension_code": "old"},
        422,
        "unknown dimension 'old'",
    ),
    (
        "PATCH",
        "/api/v1/indicators/nev_output",
        {"unit_code": "percent"},
        409,
        "its unit cannot change",
    ),
    (
        "PATCH",
        "/api/v1/indicators/nev_output",
        {"family_code": "nope"},
        422,
        "unknown comparability family",
    ),
    (
        "PATCH",
        "/api/v1/indicators/ic_output",
        {"family_code": "sei_share"},
        200,
        '"family_code":"sei_share"',
    ),
    ("DELETE", "/api/v1/indicators/nev_output", None, 409, "still used"),
    (
        "POST",
        "/api/v1/sources",
        {
            "title": "t",
            "title_en": "t",
            "publication": "p",
            "reference_year": 2025,
            "provenance_note": "n",
        },
        201,
        '"id":2',
    ),
    (
        "PATCH",
        "/api/v1/sources/1",
        {"url": "https://example.org/a"},
        200,
        '"url":"https://example.org/a"',
    ),
    ("PATCH", "/api/v1/sources/1", {"reference_year": 1066}, 422, "body.reference_year"),
    ("DELETE", "/api/v1/sources/1", None, 409, "still used"),
]


@pytest.mark.parametrize(("method", "url", "body", "status", "needle"), WRITES)
async def test_reference_writes(
    client: httpx.AsyncClient,
    keys: Keys,
    method: str,
    url: str,
    body: Any,
    status: int,
    needle: str,
) -> None:
    response = await client.request(method, url, json=body, params=REASON, headers=keys.write)
    assert response.status_code == status, response.text
    assert needle in response.text
    if status >= 400:
        assert response.headers["content-type"] == "application/problem+json"
    if status == 201:
        created = (await client.get(response.headers["location"])).json()
        assert response.json().items() <= created.items()


async def test_deleted_city_is_gone(client: httpx.AsyncClient, keys: Keys) -> None:
    assert (
        await client.delete("/api/v1/cities/hangzhou", params=REASON, headers=keys.write)
    ).status_code == 204
    assert (await client.get("/api/v1/cities/hangzhou")).status_code == 404


async def test_a_write_needs_a_reason(client: httpx.AsyncClient, keys: Keys) -> None:
    response = await client.post("/api/v1/cities", json=NEW_CITY, headers=keys.write)
    assert response.status_code == 422
    assert "query.reason" in response.json()["detail"]


# ---------------------------------------------------------------- observations


async def create(client: httpx.AsyncClient, keys: Keys, **changes: Any) -> httpx.Response:
    return await client.post(
        "/api/v1/observations",
        json={**NEW_OBSERVATION, **changes},
        params=REASON,
        headers=keys.write,
    )


async def create_derived(client: httpx.AsyncClient, keys: Keys, input_id: int) -> httpx.Response:
    """A derived SEI added value with one input."""
    return await create(
        client,
        keys,
        indicator_code="sei_va",
        unit_code="cny_100m",
        value=6000,
        value_text="derived",
        qualifier="approximately",
        is_derived=True,
        formula="gdp * share",
        derived_from=[input_id],
    )


@pytest.mark.parametrize(
    ("changes", "status", "needle"),
    [
        ({}, 201, '"version":1'),
        ({"unit_code": "percent"}, 201, '"unit_code":"percent"'),
        ({"period": None}, 201, '"period":null'),
        ({"city_code": "atlantis"}, 422, "unknown city 'atlantis'"),
        ({"indicator_code": "gdp"}, 422, "unknown indicator 'gdp'"),
        ({"source_id": 9}, 422, "unknown source 9"),
        (
            {"unit_code": "vehicles"},
            422,
            "unit 'vehicles' does not match indicator 'sei_va_share_gdp', whose unit is 'percent'",
        ),
        ({"qualifier": "roughly"}, 422, "body.qualifier"),
        ({"city_code": "shenzhen"}, 409, "exists already"),
        (
            {"is_derived": True, "formula": "a / b", "derived_from": [999]},
            422,
            "input observation 999 does not exist",
        ),
        (
            {"is_derived": True, "derived_from": [1]},
            422,
            "a derived value needs is_derived=true, a formula",
        ),
        ({"formula": "a / b"}, 422, "a derived value needs"),
        ({"value": "NaN"}, 422, "body.value"),
        ({"period": 1800}, 422, "body.period"),
        ({"version": 5}, 422, "Extra inputs are not permitted"),
    ],
)
async def test_create_observation(
    client: httpx.AsyncClient, keys: Keys, changes: dict[str, Any], status: int, needle: str
) -> None:
    response = await create(client, keys, **changes)
    assert response.status_code == status, response.text
    assert needle in response.text
    total = (await client.get("/api/v1/observations")).json()["total"]
    assert total == (31 if status == 201 else 30)


async def test_infinite_value_is_rejected(client: httpx.AsyncClient, keys: Keys) -> None:
    body = json.dumps({**NEW_OBSERVATION, "value": 0}).replace('"value": 0', '"value": 1e400')
    response = await client.post(
        "/api/v1/observations",
        content=body,
        params=REASON,
        headers={**keys.write, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "body.value" in response.json()["detail"]


async def test_create_derived_observation(client: httpx.AsyncClient, keys: Keys) -> None:
    base = (await create(client, keys)).json()
    derived = await create_derived(client, keys, base["id"])
    assert derived.status_code == 201
    assert derived.json()["derived_from"] == [base["id"]]
    # an input of a live derived value cannot be deleted
    blocked = await client.delete(
        f"/api/v1/observations/{base['id']}", params=REASON, headers=keys.write
    )
    assert blocked.status_code == 409
    assert str(derived.json()["id"]) in blocked.json()["detail"]


async def test_patch_writes_a_version_and_keeps_the_old_one(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    url = "/api/v1/observations/12"  # Shenzhen's 41.9% of GDP
    before = (await client.get(url)).json()
    response = await client.patch(
        url,
        json={"value": 42.0, "value_text": "42.0%"},
        params={"reason": "bulletin"},
        headers=keys.write,
    )
    assert response.status_code == 200
    assert (response.json()["value"], response.json()["version"]) == (42.0, 2)
    same = await client.patch(url, json={"value": 42.0}, params=REASON, headers=keys.write)
    assert same.json()["version"] == 2  # nothing changed, no version written
    history = (await client.get(f"{url}/history")).json()["items"]
    assert [(h["version"], h["value"], h["changed_by"], h["reason"]) for h in history] == [
        (1, 41.9, "seed", "seed: " + history[0]["reason"].removeprefix("seed: ")),
        (2, 42.0, "alice", "bulletin"),
    ]
    assert history[0]["quote"] == before["quote"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"qualifier": "nearly"}, 200, '"qualifier":"nearly"'),
        ({"source_id": 2}, 422, "unknown source 2"),
        ({"unit_code": "vehicles"}, 422, "does not match"),
        ({"value": None}, 422, "value cannot be null"),
        ({"period": None}, 200, '"period":null'),
        ({"period": 2023, "value": 1}, 200, '"value":1.0'),
        ({"city_code": "ningbo"}, 422, "Extra inputs are not permitted"),
        ({"is_derived": True}, 409, "a derived value needs"),  # valid alone; not with the row
    ],
)
async def test_patch_observation(
    client: httpx.AsyncClient, keys: Keys, body: dict[str, Any], status: int, needle: str
) -> None:
    response = await client.patch(
        "/api/v1/observations/12", json=body, params=REASON, headers=keys.write
    )
    assert response.status_code == status, response.text
    assert needle in response.text


async def test_patch_into_an_existing_key_conflicts(client: httpx.AsyncClient, keys: Keys) -> None:
    created = (await create(client, keys, period=2022)).json()
    assert (await create(client, keys)).status_code == 201
    response = await client.patch(
        f"/api/v1/observations/{created['id']}",
        json={"period": 2023},
        params=REASON,
        headers=keys.write,
    )
    assert response.status_code == 409


async def test_delete_is_soft(client: httpx.AsyncClient, keys: Keys) -> None:
    url = "/api/v1/observations/13"
    response = await client.delete(url, params={"reason": "duplicate"}, headers=keys.write)
    assert response.status_code == 204
    assert (await client.get(url)).status_code == 404
    assert (await client.delete(url, params=REASON, headers=keys.write)).status_code == 404
    assert (await client.get("/api/v1/observations")).json()["total"] == 29
    history = (await client.get(f"{url}/history")).json()["items"]
    assert [(h["version"], h["deleted"], h["reason"]) for h in history][1:] == [
        (2, True, "duplicate")
    ]
    assert (await client.get("/api/v1/observations/99999/history")).status_code == 404


async def test_recreating_a_deleted_key_continues_its_history(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    first = (await create(client, keys)).json()
    await client.delete(f"/api/v1/observations/{first['id']}", params=REASON, headers=keys.write)
    again = (await create(client, keys, value=34.0)).json()
    assert (again["id"], again["version"]) == (first["id"], 3)


# ---------------------------------------------------------------- as_of


async def test_as_of_reads_the_past(client: httpx.AsyncClient, keys: Keys) -> None:
    t_seeded = now()
    obs = (await create(client, keys)).json()
    t_created = now()
    url = f"/api/v1/observations/{obs['id']}"
    await client.patch(url, json={"value": 34.0}, params=REASON, headers=keys.write)
    t_corrected = now()
    await client.patch(
        url, json={"value": 35.0, "qualifier": "nearly"}, params=REASON, headers=keys.write
    )
    t_again = now()
    await client.delete(url, params=REASON, headers=keys.write)
    t_deleted = now()
    await client.patch(
        "/api/v1/observations/12", json={"value": 40.0}, params=REASON, headers=keys.write
    )

    async def state(moment: str) -> tuple[Any, ...]:
        body = (
            await client.get("/api/v1/observations", params={"as_of": moment, "city": "hangzhou"})
        ).json()
        shenzhen = (
            await client.get(
                "/api/v1/observations",
                params={"as_of": moment, "indicator": "sei_va_share_gdp", "city": "shenzhen"},
            )
        ).json()
        return (
            [(o["value"], o["qualifier"], o["version"]) for o in body["items"]],
            shenzhen["items"][0]["value"],
        )

    assert await state(t_seeded) == ([], 41.9)
    assert await state(t_created) == ([(33.1, "exact", 1)], 41.9)
    assert await state(t_corrected) == ([(34.0, "exact", 2)], 41.9)
    assert await state(t_again) == ([(35.0, "nearly", 3)], 41.9)
    assert await state(t_deleted) == ([], 41.9)
    assert await state(now()) == ([], 40.0)
    assert (await client.get("/api/v1/observations")).json()["total"] == 30
    total_then = (await client.get("/api/v1/observations", params={"as_of": t_again})).json()[
        "total"
    ]
    assert total_then == 31
    csv_then = await client.get(
        "/api/v1/observations.csv", params={"as_of": t_again, "city": "hangzhou"}
    )
    rows = list(csv.DictReader(io.StringIO(csv_then.text, newline="")))
    assert [(r["value"], r["qualifier"]) for r in rows] == [("35.0", "nearly")]
    history = (await client.get(f"{url}/history")).json()
    assert [h["version"] for h in history["items"]] == [1, 2, 3, 4]


async def test_as_of_before_any_data_is_empty(client: httpx.AsyncClient) -> None:
    body = (
        await client.get("/api/v1/observations", params={"as_of": "2000-01-01T00:00:00"})
    ).json()
    assert body["total"] == 0
    bad = await client.get("/api/v1/observations", params={"as_of": "yesterday"})
    assert bad.status_code == 422


# ---------------------------------------------------------------- audit and caching


async def test_every_write_is_audited(client: httpx.AsyncClient, keys: Keys) -> None:
    await client.post(
        "/api/v1/cities", json=NEW_CITY, params={"reason": "new city"}, headers=keys.write
    )
    await client.patch(
        "/api/v1/observations/12",
        json={"value": 42.0},
        params={"reason": "bulletin"},
        headers=keys.write,
    )
    assert (await client.get("/api/v1/audit", headers=keys.write)).status_code == 403
    assert (await client.get("/api/v1/audit")).status_code == 401
    events = (await client.get("/api/v1/audit", headers=keys.admin)).json()["items"]
    assert [
        (e["actor"], e["action"], e["resource"], e["resource_key"], e["reason"]) for e in events
    ] == [
        ("seed", "seed", "seed", "seed", "python -m app seed"),
        ("alice", "create", "city", "suzhou", "new city"),
        ("alice", "update", "observation", "12", "bulletin"),
    ]
    assert events[2]["changes"] == '{"value": [41.9, 42.0]}'


async def test_etag_and_last_modified(client: httpx.AsyncClient, keys: Keys) -> None:
    first = await client.get("/api/v1/cities/ningbo")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('W/"v')
    cached = await client.get("/api/v1/cities/ningbo", headers={"If-None-Match": etag})
    assert (cached.status_code, cached.content, cached.headers["etag"]) == (304, b"", etag)
    since = await client.get("/api/v1/cities/ningbo", headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    await client.patch(
        "/api/v1/cities/ningbo", json={"notes": "changed"}, params=REASON, headers=keys.write
    )
    fresh = await client.get("/api/v1/cities/ningbo", headers={"If-None-Match": etag})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] != etag
    assert fresh.json()["notes"] == "changed"
    csv = await client.get(
        "/api/v1/observations.csv", headers={"If-None-Match": fresh.headers["etag"]}
    )
    assert csv.status_code == 304


async def test_a_write_through_another_worker_is_seen_at_once(
    client: httpx.AsyncClient, keys: Keys, settings: Settings
) -> None:
    """Each worker caches its own answers; the data version, read from the database on every
    request (app/caching.py), is what empties the cache. So a write made through another
    worker changes the ETag and the answer on this one's next request."""
    first = await client.get("/api/v1/cities/ningbo")
    assert (await client.get("/api/v1/cities/ningbo")).headers["etag"] == first.headers["etag"]
    other = create_app(settings)
    transport = httpx.ASGITransport(app=other)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        written = await c.patch(
            "/api/v1/cities/ningbo", json={"notes": "elsewhere"}, params=REASON, headers=keys.write
        )
    other.state.write_engine.dispose()
    other.state.engine.dispose()
    after = await client.get("/api/v1/cities/ningbo")
    assert written.status_code == 200
    assert after.headers["etag"] == f'W/"v{int(first.headers["etag"][4:-1]) + 1}"'
    assert first.json()["notes"] != after.json()["notes"] == "elsewhere"


async def test_the_version_connection_is_its_own_and_closed_at_shutdown(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The data version is read outside any transaction, on a connection of its own (not the
    pool's), which the app closes when it shuts down."""
    to_app, from_test = anyio.create_memory_object_stream[dict[str, Any]](2)
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with to_app, from_test, anyio.create_task_group() as tasks:
        tasks.start_soon(app, scope, from_test.receive, send)
        await to_app.send({"type": "lifespan.startup"})
        await client.get("/api/v1/cities")
        await client.get("/api/v1/cities")
        middleware = conditional_get(app)
        if BACKEND == "postgresql":
            assert middleware.reader is not None
            connection = middleware.reader.connection
            status = connection.info.transaction_status.name
            assert (connection.autocommit, status) == (True, "IDLE")
            assert app.state.engine.pool.checkedout() == 0
        else:
            assert middleware.reader is not None
            connection = middleware.reader.connection
            assert (connection.isolation_level, connection.in_transaction) == (None, False)
        await to_app.send({"type": "lifespan.shutdown"})
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert middleware.reader is None
    if BACKEND == "postgresql":
        assert connection.closed
    else:
        with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
            connection.execute("SELECT 1")


def test_openapi_marks_every_write_as_secured(app: FastAPI) -> None:
    schema = app.openapi()
    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            secured = operation.get("security") == [{"APIKeyHeader": []}, {"HTTPBearer": []}]
            assert secured == (method != "get" or path == "/api/v1/audit"), (method, path)


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PATCH", {"note": "a curator's note"}),
        ("PATCH", {"value": 42, "value_text": "42%", "qualifier": "nearly"}),
        ("PATCH", {"period": None}),
        ("POST", {}),
        ("POST", {"value": -0.0, "note": "零"}),
    ],
)
async def test_a_write_answers_what_a_read_then_gives(
    client: httpx.AsyncClient, keys: Keys, method: str, body: dict[str, Any]
) -> None:
    """A write's answer is read in the write's own transaction: field for field, it is what a
    later read of that observation gives."""
    if method == "POST":
        written = await create(client, keys, **body)
    else:
        written = await client.patch(
            "/api/v1/observations/12", json=body, params=REASON, headers=keys.write
        )
    assert written.status_code in (200, 201), written.text
    read = await client.get(f"/api/v1/observations/{written.json()['id']}")
    assert written.json() == read.json()


async def test_a_derived_write_answers_what_a_read_then_gives(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    base = (await create(client, keys)).json()
    derived = await create_derived(client, keys, base["id"])
    url = f"/api/v1/observations/{derived.json()['id']}"
    assert derived.json() == (await client.get(url)).json()
    patched = await client.patch(url, json={"note": "checked"}, params=REASON, headers=keys.write)
    assert patched.json() == (await client.get(url)).json()
    assert patched.json()["derived_from"] == [base["id"]]


async def test_a_key_is_checked_without_waiting_for_the_writer(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    """The key is read on the read engine before the write takes its turn, so while another
    write holds SQLite's one writer a bad key still gets its 401 at once, not a wait."""
    if BACKEND != "sqlite":
        pytest.skip("the writer's turn is SQLite's")
    turn = app.state.writer_turn.lock
    turn.acquire()
    try:
        with anyio.fail_after(5):
            refused = await client.patch(
                "/api/v1/observations/12", json={"note": "x"}, params=REASON, headers=keys.revoked
            )
    finally:
        turn.release()
    assert refused.status_code == 401
