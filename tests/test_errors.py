"""Every error path answers in the one shape: RFC 9457 problem+json, never a 500."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.config import Settings
from app.db import SessionDep
from app.main import create_app
from app.middleware import DOCS_POLICY
from tests.conftest import BACKEND, Databases, Keys

pytestmark = pytest.mark.anyio

# (method, url, status, words the detail must contain)
ERRORS = [
    ("GET", "/api/v1/cities/atlantis", 404, ["'atlantis'", "/api/v1/cities"]),
    ("GET", "/api/v1/dimensions/old_drivers", 404, ["'old_drivers'", "/api/v1/dimensions"]),
    ("GET", "/api/v1/indicators/gdp", 404, ["'gdp'", "/api/v1/indicators"]),
    ("GET", "/api/v1/sources/99", 404, ["99", "/api/v1/sources"]),
    ("GET", "/api/v1/sources/abc", 422, ["path.id"]),
    ("GET", "/api/v1/sources/0", 422, ["path.id"]),
    ("GET", "/api/v1/sources/99999999999999999999", 422, ["path.id"]),
    ("GET", "/api/v1/cities/" + "x" * 65, 422, ["path.code"]),
    ("GET", "/api/v1/observations?limit=0", 422, ["query.limit"]),
    ("GET", "/api/v1/observations?limit=501", 422, ["query.limit"]),
    ("GET", "/api/v1/observations?limit=ten", 422, ["query.limit"]),
    ("GET", "/api/v1/observations?cursor=%%%", 422, ["cursor"]),
    ("GET", "/api/v1/observations?cursor=bm90LWFuLWludA", 422, ["cursor"]),
    ("GET", "/api/v1/cities?cursor=" + "a" * 201, 422, ["query.cursor"]),
    ("GET", "/api/v1/observations?city=atlantis,ningbo", 422, ["'atlantis'", "/api/v1/cities"]),
    ("GET", "/api/v1/observations?indicator=gdp", 422, ["'gdp'", "/api/v1/indicators"]),
    ("GET", "/api/v1/observations?dimension=x", 422, ["'x'", "/api/v1/dimensions"]),
    ("GET", "/api/v1/observations?city=' OR 1=1 --", 422, ["' OR 1=1 --"]),
    ("GET", "/api/v1/observations?year_from=2024&year_to=2023", 422, ["year_from"]),
    ("GET", "/api/v1/observations?year_from=99999", 422, ["query.year_from"]),
    ("GET", "/api/v1/observations?latest=maybe", 422, ["query.latest"]),
    (
        "GET",
        "/api/v1/observations?city=" + ",".join(f"c{i}" for i in range(101)),
        422,
        ["At most 100 codes"],
    ),
    ("GET", "/api/v1/observations?" + "city=a&" * 101, 422, ["query.city"]),
    ("GET", "/api/v1/observations?cursor=OTIyMzM3MjAzNjg1NDc3NTgwOA", 422, ["cursor"]),
    ("GET", "/api/v1/observations?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", 422, ["cursor"]),
    ("GET", "/api/v1/observations?cursor=LTE", 422, ["cursor"]),
    ("GET", "/api/v1/observations?cursor=IDEg", 422, ["cursor"]),
    ("GET", "/api/v1/observations?cursor=77yR", 422, ["cursor"]),
    ("GET", "/api/v1/sources?cursor=OTIyMzM3MjAzNjg1NDc3NTgwOA", 422, ["cursor"]),
    ("GET", "/api/v1/cities?cursor=%00", 422, ["cursor"]),
    ("GET", "/api/v1/cities?cursor=AAAA", 422, ["cursor"]),
    ("GET", "/api/v1/observations.csv?city=atlantis", 422, ["'atlantis'"]),
    ("GET", "/api/v1/observations.csv?bom=perhaps", 422, ["query.bom"]),
    ("GET", "/api/v1/indicators?dimension=nope", 422, ["'nope'"]),
    ("GET", "/api/v1/indicators.csv?dimension=nope", 422, ["'nope'"]),
    ("GET", "/api/v1/nothing-here", 404, ["Not Found"]),
    ("PUT", "/api/v1/cities/ningbo", 405, ["Method Not Allowed"]),
    ("DELETE", "/api/v1/observations", 405, ["Method Not Allowed"]),
]


@pytest.mark.parametrize(("method", "url", "status", "words"), ERRORS)
async def test_error_shape(
    client: httpx.AsyncClient, method: str, url: str, status: int, words: list[str]
) -> None:
    response = await client.request(method, url)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) - {"errors"} == {"type", "title", "status", "detail", "instance"}
    assert (body["type"], body["status"], body["instance"]) == (
        "about:blank",
        status,
        url.split("?")[0],
    )
    for word in words:
        assert word in body["detail"]
    if "errors" in body:
        assert status == 422
        assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    assert "Traceback" not in response.text


def test_openapi_declares_problem_json_for_every_error(app: FastAPI) -> None:
    schema = app.openapi()
    declared = 0
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            assert operation.get("summary"), path
            assert operation.get("description"), path
            assert operation.get("tags"), path
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert response["content"] == {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    }
                    declared += 1
    operations = [(m, o) for ops in schema["paths"].values() for m, o in ops.items()]
    assert all("414" in o["responses"] for _, o in operations)  # the URL limit
    writes = [o for m, o in operations if m in ("post", "patch")]
    assert all("413" in o["responses"] for o in writes)  # the body limit
    assert all("400" in o["responses"] for o in writes)  # a body that does not parse
    assert (len(operations), len(writes), declared) == (29, 9, 186)
    assert set(schema["components"]["schemas"]["Problem"]["required"]) == {
        "title",
        "status",
        "detail",
        "instance",
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_the_problem_schemas_are_written_as_fastapi_writes_its_own(app: FastAPI) -> None:
    """Routes name no model for their errors, so the Problem schemas are added to the document
    afterwards: through FastAPI's OpenAPI models, as get_openapi() writes its own (no `null`
    defaults), among the other schemas in name order."""
    schemas = app.openapi()["components"]["schemas"]
    assert schemas["Problem"]["properties"]["errors"] == {
        "anyOf": [
            {"items": {"$ref": "#/components/schemas/FieldError"}, "type": "array"},
            {"type": "null"},
        ],
        "title": "Errors",
        "description": "One entry per invalid input (422 only).",
    }
    assert schemas["FieldError"]["properties"]["line"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "title": "Line",
        "description": "CSV imports: the line of the file (header = 1).",
    }
    assert schemas["FieldError"]["required"] == ["loc", "msg", "type"]
    assert list(schemas) == sorted(schemas)


def test_every_schema_and_field_is_described(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]
    undocumented = [name for name, s in schemas.items() if not s.get("description")]
    undocumented += [
        f"{name}.{field}"
        for name, s in schemas.items()
        for field, prop in s.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undocumented == []


def test_every_parameter_is_described(app: FastAPI) -> None:
    undescribed = [
        f"{method} {path} {param['name']}"
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        for param in operation.get("parameters", [])
        if not param.get("description")
    ]
    assert undescribed == []


async def test_unavailable_database_is_a_503(tmp_path: Path, databases: Databases) -> None:
    # SQLite: a folder, not a file. PostgreSQL: a database the server does not have.
    url = f"sqlite:///{tmp_path}" if BACKEND == "sqlite" else databases.url("no_such_database")
    app = create_app(Settings(database_url=url))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        for url in ("/healthz", "/api/v1/cities", "/api/v1/observations?city=ningbo"):
            response = await c.get(url)
            assert (response.status_code, response.headers["content-type"]) == (
                503,
                "application/problem+json",
            )
            assert response.json()["detail"] == "The database is unavailable; try again shortly."
            assert response.headers["retry-after"] == "5"
    app.state.engine.dispose()
    app.state.write_engine.dispose()


async def test_unexpected_error_is_a_bare_500(app: FastAPI) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        response = await c.get("/boom", headers={"Origin": "https://example.org"})
    assert (response.status_code, response.headers["content-type"]) == (
        500,
        "application/problem+json",
    )
    assert response.json()["detail"] == "The server failed to answer this request."
    assert "secret" not in response.text and "Traceback" not in response.text
    # a browser may read it: it carries CORS headers like every other answer
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("sql", "status", "detail"),
    [
        # a write that raced past its route's check into a unique key
        (
            "INSERT INTO city SELECT * FROM city WHERE code = 'ningbo'",
            409,
            "The write conflicts with data written meanwhile; nothing was written.",
        ),
        # a statement the database cannot run is our bug, not an outage
        ("SELECT * FROM no_such_table", 500, "The server failed to answer this request."),
    ],
    ids=["conflict", "bad statement"],
)
async def test_database_errors_by_kind(app: FastAPI, sql: str, status: int, detail: str) -> None:
    @app.post("/raw")
    def raw(session: SessionDep) -> None:
        session.exec(text(sql))  # type: ignore[call-overload]
        session.commit()

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        response = await c.post("/raw")
    assert (response.status_code, response.headers["content-type"]) == (
        status,
        "application/problem+json",
    )
    assert response.json()["detail"] == detail
    assert "no_such_table" not in response.text and "ningbo" not in response.text
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await c.get("/api/v1/cities/ningbo")).status_code == 200


@pytest.mark.parametrize(
    ("path", "status", "policy"),
    [
        ("/api/v1/cities", 200, "default-src 'none'; frame-ancestors 'none'"),
        ("/api/v1/cities/atlantis", 404, "default-src 'none'; frame-ancestors 'none'"),
        ("/api/v1/observations.csv", 200, "default-src 'none'; frame-ancestors 'none'"),
        ("/docs", 200, DOCS_POLICY),
        ("/redoc", 200, DOCS_POLICY),
        ("/static-offline-docs/swagger-ui-bundle.js", 200, DOCS_POLICY),
    ],
)
async def test_security_headers(
    client: httpx.AsyncClient, path: str, status: int, policy: str
) -> None:
    response = await client.get(path, headers={"Origin": "https://example.org"})
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["content-security-policy"] == policy
    assert response.headers["access-control-allow-origin"] == "*"


async def test_docs_can_be_turned_off(db_url: str) -> None:
    app = create_app(Settings(database_url=db_url, docs_enabled=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/redoc")).status_code == 404
        assert (await c.get("/openapi.json")).status_code == 200  # clients still get the schema
        assert (await c.get("/api/v1/cities")).status_code == 200
    app.state.engine.dispose()
    app.state.write_engine.dispose()


async def test_long_urls_are_a_414(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/observations", params={"city": "x" * 9000})
    assert (response.status_code, response.headers["content-type"]) == (
        414,
        "application/problem+json",
    )
    assert response.json()["detail"].startswith("The URL is 9")
    assert response.json()["detail"].endswith("at most 8192 are accepted.")


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 65536):
        yield b" " * 65536


@pytest.mark.parametrize("declared", [True, False])
async def test_large_bodies_are_a_413(
    client: httpx.AsyncClient, keys: Keys, declared: bool
) -> None:
    """Over MAX_BODY_BYTES (1 MiB): refused by the declared Content-Length, or, for a chunked
    upload that declares none, as soon as the bytes received pass the limit."""
    size = 2 * 1024 * 1024
    body = b" " * size if declared else _chunks(size)
    response = await client.post(
        "/api/v1/observations",
        content=body,
        params={"reason": "r"},
        headers={**keys.write, "Content-Type": "application/json"},
    )
    assert (response.status_code, response.headers["content-type"]) == (
        413,
        "application/problem+json",
    )
    expected = f"{size} bytes" if declared else "over 1048576 bytes"
    assert expected in response.json()["detail"]
    total = (await client.get("/api/v1/observations")).json()["total"]
    assert total == 30  # nothing was written
