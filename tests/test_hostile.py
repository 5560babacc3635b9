"""Hostile input never gets a 500 or a stack trace: every answer is a 2xx, or a 4xx in the one
error shape, and the data is unchanged."""

import json

import httpx
import pytest

from tests.conftest import Keys

pytestmark = pytest.mark.anyio

INJECTIONS = ["' OR 1=1 --", "ningbo'; DROP TABLE observation; --", '" OR ""="', "%' --"]


@pytest.mark.parametrize(
    ("url", "status"),
    [
        *((f"/api/v1/observations?city={s}", 422) for s in INJECTIONS),
        *((f"/api/v1/cities/{s}", 422) for s in INJECTIONS),
        *((f"/api/v1/indicators/{s}", 422) for s in INJECTIONS),
        ("/api/v1/dimensions/%00", 422),
        ("/api/v1/observations?cursor=' OR 1=1", 422),
        ("/api/v1/cities/%00", 422),
        ("/api/v1/observations?city=ning%00bo", 422),
        ("/api/v1/observations?city=%FF%FE", 422),
        ("/api/v1/cities/%C3%28", 422),
        ("/api/v1/observations?year_from=99999999999999999999999", 422),
        ("/api/v1/observations?limit=1e308", 422),
        ("/api/v1/observations?limit=NaN", 422),
        ("/api/v1/observations/99999999999999999999999999", 422),
        ("/api/v1/observations?as_of=NaN", 422),
        ("/api/v1/observations?latest=%00", 422),
        ("/api/v1/observations.csv?dimension=%00", 422),
    ],
)
async def test_hostile_reads(client: httpx.AsyncClient, url: str, status: int) -> None:
    response = await client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text


DEEP = "[" * 100_000 + "]" * 100_000


async def patch(client: httpx.AsyncClient, keys: Keys, body: str | bytes) -> httpx.Response:
    return await client.patch(
        "/api/v1/observations/12",
        content=body,
        params={"reason": "hostile input"},
        headers={**keys.write, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    "body",
    [
        '{"value": NaN}',
        '{"value": Infinity}',
        '{"value": -Infinity}',
        '{"value": 1e999}',
        '{"value": 1, "is_admin": true}',
        '{"quote": "\\u0000"}',
        '{"note": "\\ud800"}',
        "\xff\xfe not json",
        '{"value": "1; DROP TABLE observation"}',
    ],
)
async def test_hostile_writes(client: httpx.AsyncClient, keys: Keys, body: str) -> None:
    before = (await client.get("/api/v1/observations/12")).json()
    response = await patch(client, keys, body.encode("utf-8", "surrogatepass"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text
    assert (await client.get("/api/v1/observations/12")).json() == before


@pytest.mark.parametrize("body", [DEEP, '{"a":' * 10_000 + "1" + "}" * 10_000])
async def test_json_nested_too_deeply_is_a_400(
    client: httpx.AsyncClient, keys: Keys, body: str
) -> None:
    """The JSON parser gives up on nesting this deep; the answer says so, in the one shape."""
    response = await patch(client, keys, body)
    assert (response.status_code, response.headers["content-type"]) == (
        400,
        "application/problem+json",
    )
    assert response.json()["detail"] == "There was an error parsing the body"


async def test_huge_numbers_are_stored_exactly(client: httpx.AsyncClient, keys: Keys) -> None:
    body = '{"value": 123456789012345678901234567890123456789012345678901234567890}'
    response = await patch(client, keys, body)
    assert response.status_code == 200
    assert response.json()["value"] == 1.2345678901234568e59


async def test_unknown_fields_in_a_write_are_named(client: httpx.AsyncClient, keys: Keys) -> None:
    response = await patch(client, keys, json.dumps({"value": 1, "is_admin": True}))
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == ["body.is_admin"]
