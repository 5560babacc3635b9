"""What contract fuzzing (.ci/fuzz, schemathesis) found, pinned down without the fuzzer: each
case is a request that once got a 500, or an answer the OpenAPI document did not promise."""

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.errors import BadRequest
from app.queries import decode_cursor
from tests.conftest import Keys
from tests.factories import NEW_OBSERVATION as OBSERVATION

pytestmark = pytest.mark.anyio

REASON = {"reason": "fuzz finding"}
SOURCE = {
    "title": "标题",
    "title_en": "Title",
    "publication": "Ningbo Daily",
    "reference_year": 2024,
    "provenance_note": "Made up for a test.",
}


async def patch(
    client: httpx.AsyncClient, keys: Keys, url: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.patch(url, json=body, params=REASON, headers=keys.write)


# ---------------------------------------------------------------- 500s


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/audit?cursor=%C3%A4",  # non-ASCII: base64 raised ValueError, not binascii.Error
        "/api/v1/observations?cursor=%1B%F3%88%83%B1",
        "/api/v1/cities?cursor=a%2Bb",  # '+' is base64, not base64url
    ],
)
async def test_malformed_cursor_is_a_422(client: httpx.AsyncClient, keys: Keys, url: str) -> None:
    response = await client.get(url, headers=keys.admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("cursor", ["ä", "\x1b\U000c80f1", "MTA=", "bmluZ2Jv"])
def test_decode_cursor_rejects_what_it_did_not_make(cursor: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(cursor, as_int=True)


@pytest.mark.parametrize(
    ("reference_year", "status"),
    [
        (-13991646470802165760, 422),  # overflowed SQLite's INTEGER: a 500
        (0, 422),
        (1899, 422),
        (2201, 422),
        (1900, 201),
        (2200, 201),
    ],
)
async def test_source_reference_year_is_bounded(
    client: httpx.AsyncClient, keys: Keys, reference_year: int, status: int
) -> None:
    body = {**SOURCE, "reference_year": reference_year}
    response = await client.post("/api/v1/sources", json=body, params=REASON, headers=keys.write)
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    "change",
    [
        {"source_id": 2**63},  # would overflow SQLite's INTEGER
        {"source_id": 2**31},  # would overflow PostgreSQL's INTEGER
        {"source_id": 0},
        {"derived_from": [2**63]},
        {"derived_from": [0]},
    ],
)
async def test_referenced_ids_are_bounded(
    client: httpx.AsyncClient, keys: Keys, change: dict[str, Any]
) -> None:
    body = {**OBSERVATION, **change}
    response = await client.post(
        "/api/v1/observations", json=body, params=REASON, headers=keys.write
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["type"] in ("greater_than_equal", "less_than_equal")


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/api/v1/observations/2147483648", 422),  # past PostgreSQL's INTEGER: a 500 there
        ("/api/v1/observations/9223372036854775806/history", 422),
        ("/api/v1/observations/2147483647", 404),
        ("/api/v1/observations/2147483647/history", 404),
    ],
)
async def test_observation_ids_are_bounded(
    client: httpx.AsyncClient, url: str, status: int
) -> None:
    response = await client.get(url)
    assert response.status_code == status, response.text


# ---------------------------------------------------------------- invalid data accepted


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"reference_year": False}, 422),  # was stored as 0
        ({"reference_year": True}, 422),
        ({"reference_year": "2024"}, 422),
        ({"reference_year": 2024.5}, 422),
        ({"reference_year": 2024.0}, 200),  # JSON's integer 2024 all the same
        ({"published_on": 0}, 422),  # was read as a Unix timestamp: 1970-01-01
        ({"published_on": 1.5}, 422),
        ({"published_on": "2024-03-01"}, 200),
        ({"published_on": None}, 200),
    ],
)
async def test_source_fields_take_json_types_only(
    client: httpx.AsyncClient, keys: Keys, change: dict[str, Any], status: int
) -> None:
    response = await patch(client, keys, "/api/v1/sources/1", change)
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"period": True}, 422),
        ({"period": "2023"}, 422),
        ({"period": 2022.0}, 201),
        ({"value": "33.1"}, 422),
        ({"value": True}, 422),
        ({"value": 33}, 201),
        ({"is_derived": 0}, 422),
        ({"source_id": "1"}, 422),
    ],
)
async def test_observation_fields_take_json_types_only(
    client: httpx.AsyncClient, keys: Keys, change: dict[str, Any], status: int
) -> None:
    body = {**OBSERVATION, **change}
    response = await client.post(
        "/api/v1/observations", json=body, params=REASON, headers=keys.write
    )
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("as_of", "status"),
    [
        ("0.5", 422),  # was read as a Unix timestamp
        ("1700000000", 422),
        ("2026-01-01", 422),  # a date is no date-time
        ("2026-01-01T00:00:00Z", 200),
        ("2026-01-01T00:00:00", 200),
        ("2026-01-01 00:00:00+08:00", 200),
    ],
)
async def test_as_of_is_a_date_time(client: httpx.AsyncClient, as_of: str, status: int) -> None:
    for path in ("/api/v1/observations", "/api/v1/observations.csv"):
        response = await client.get(path, params={"as_of": as_of})
        assert response.status_code == status, (path, response.text)


# ---------------------------------------------------------------- the schema says the truth


async def test_update_schemas_do_not_offer_null_where_it_is_refused(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]
    offered = {
        name: sorted(
            field
            for field, prop in schemas[name]["properties"].items()
            if {"type": "null"} in prop.get("anyOf", [])
        )
        for name in ("CityUpdate", "IndicatorUpdate", "ObservationUpdate", "SourceUpdate")
    }
    assert offered == {
        "CityUpdate": ["notes"],
        "IndicatorUpdate": ["family_code"],
        "ObservationUpdate": ["formula", "note", "period"],
        "SourceUpdate": [
            "interviewee",
            "interviewee_title",
            "published_inferred",
            "published_on",
            "reporter",
            "url",
        ],
    }


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/cities/ningbo", {"admin_level": None}),
        ("/api/v1/indicators/sei_va_share_gdp", {"basis": None}),
        ("/api/v1/observations/12", {"value": None}),
        ("/api/v1/sources/1", {"reference_year": None}),
    ],
)
async def test_null_where_the_schema_offers_none_is_a_422(
    client: httpx.AsyncClient, keys: Keys, url: str, body: dict[str, Any]
) -> None:
    response = await patch(client, keys, url, body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == f"body: Value error, {next(iter(body))} cannot be null"


async def test_code_filters_declare_their_pattern(app: FastAPI) -> None:
    from app.pagination import CODES_PATTERN

    paths = app.openapi()["paths"]
    for path, name in [
        ("/api/v1/observations", "city"),
        ("/api/v1/observations.csv", "indicator"),
        ("/api/v1/indicators", "dimension"),
    ]:
        parameter = next(p for p in paths[path]["get"]["parameters"] if p["name"] == name)
        array = parameter["schema"]["anyOf"][0]
        assert array["items"] == {"type": "string", "pattern": CODES_PATTERN}


@pytest.mark.parametrize(
    ("city", "status"),
    [
        ("ningbo", 200),
        (" ningbo , shenzhen ,", 200),  # spaces and empty codes, as the pattern allows
        ("ningbo\t", 422),  # the pattern allows spaces only; a tab was stripped before
        ("+0.0", 422),
        ("Ningbo", 422),
    ],
)
async def test_code_filters_accept_what_the_pattern_does(
    client: httpx.AsyncClient, city: str, status: int
) -> None:
    from app.pagination import CODES_PATTERN

    assert bool(re.search(CODES_PATTERN, city)) == (status == 200)
    response = await client.get("/api/v1/observations", params={"city": city})
    assert response.status_code == status, response.text


async def test_observation_create_schema_states_the_derivation_rule(app: FastAPI) -> None:
    schema = app.openapi()["components"]["schemas"]["ObservationCreate"]
    derived, stated = schema["anyOf"]
    assert derived["required"] == ["is_derived", "formula", "derived_from"]
    assert stated["properties"]["is_derived"] == {"const": False}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        # what the fuzzer sent: a formula on a value that says it is not derived
        ({"is_derived": False, "formula": "a / b", "derived_from": [23, 24]}, 422),
        ({"is_derived": True, "formula": None}, 422),
        ({"formula": "a / b", "derived_from": []}, 422),
        # consistent in itself, but observation 12 is stated: it conflicts with the row
        ({"formula": "a / b"}, 409),
        ({"is_derived": True, "formula": "a / b"}, 409),
        ({"is_derived": True, "formula": "a / b", "derived_from": [23, 24]}, 200),
        ({"is_derived": False, "formula": None, "derived_from": []}, 200),
    ],
)
async def test_observation_update_derivation(
    client: httpx.AsyncClient, keys: Keys, body: dict[str, Any], status: int
) -> None:
    response = await patch(client, keys, "/api/v1/observations/12", body)
    assert response.status_code == status, response.text
