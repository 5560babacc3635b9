"""Lists, pagination, filters and the detail views, through HTTP."""

import asyncio
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel import Session

from app.queries import dimension_coverage
from app.routes import dimensions
from tests.conftest import get_all

pytestmark = pytest.mark.anyio

LISTS = [
    ("/api/v1/cities", "code", 5),
    ("/api/v1/dimensions", "code", 4),
    ("/api/v1/indicators", "code", 29),
    ("/api/v1/observations", "id", 30),
    ("/api/v1/sources", "id", 1),
]


@pytest.mark.parametrize(("url", "key", "total"), LISTS)
async def test_list_envelope(client: httpx.AsyncClient, url: str, key: str, total: int) -> None:
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"items", "total", "limit", "next", "next_url"}
    assert (body["total"], body["limit"], body["next"], len(body["items"])) == (
        total,
        50,
        None,
        total,
    )
    keys = [item[key] for item in body["items"]]
    assert keys == sorted(keys)
    assert response.headers["link"] == f'<http://test{url}>; rel="first"'


@pytest.mark.parametrize(("url", "key", "total"), LISTS)
@pytest.mark.parametrize("limit", [1, 2, 7])
async def test_cursor_walk_visits_every_item_once(
    client: httpx.AsyncClient, url: str, key: str, total: int, limit: int
) -> None:
    seen: list[object] = []
    params: dict[str, object] = {"limit": limit}
    pages = 0
    while True:
        response = await client.get(url, params=params)
        body = response.json()
        pages += 1
        assert body["total"] == total
        assert len(body["items"]) == min(limit, total - len(seen))
        seen += [item[key] for item in body["items"]]
        if body["next"] is None:
            assert 'rel="next"' not in response.headers["link"]
            break
        next_link = response.headers["link"].split(", ")[1]
        assert next_link == f'<{body["next_url"]}>; rel="next"'
        assert parse_qs(urlsplit(body["next_url"]).query)["cursor"] == [body["next"]]
        params["cursor"] = body["next"]
    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // limit)


FILTERS = [
    ({"city": "ningbo"}, 6),
    ({"city": "ningbo,shenzhen"}, 18),
    ({"city": " ningbo , ningbo ,"}, 6),
    ({"city": ["ningbo", "shenzhen,ningbo"]}, 18),
    ({"indicator": "nev_output"}, 2),
    (
        {
            "indicator": "sei_va_share_gdp,sei_va_share_industrial_va,sei_output_share_industrial_output"
        },
        3,
    ),
    ({"dimension": "new_models"}, 2),
    ({"dimension": "new_production_relations"}, 3),
    ({"dimension": "new_drivers", "city": "hefei"}, 4),
    ({"year_from": 2023}, 9),
    ({"year_to": 2022}, 0),
    ({"year_from": 2023, "year_to": 2023, "city": "changzhou"}, 2),
    ({"city": "hangzhou"}, 0),
    ({"latest": "true"}, 30),
    ({"latest": "true", "city": "ningbo", "dimension": "new_industries"}, 4),
]


@pytest.mark.parametrize(("params", "total"), FILTERS)
async def test_observation_filters(
    client: httpx.AsyncClient, params: dict[str, object], total: int
) -> None:
    rows = await get_all(client, "/api/v1/observations", **params)
    assert len(rows) == total
    body = (await client.get("/api/v1/observations", params=params)).json()
    assert body["total"] == total
    for column, param in (
        ("city_code", "city"),
        ("indicator_code", "indicator"),
        ("dimension_code", "dimension"),
    ):
        if param in params:
            value = params[param]
            joined = ",".join(value) if isinstance(value, list) else str(value)
            wanted = {c.strip() for c in joined.split(",") if c.strip()}
            assert {r[column] for r in rows} <= wanted


async def test_observation_row_shape(client: httpx.AsyncClient) -> None:
    row = (
        await client.get("/api/v1/observations", params={"indicator": "sei_va_share_gdp"})
    ).json()["items"][0]
    assert row == {
        "id": row["id"],
        "city_code": "shenzhen",
        "indicator_code": "sei_va_share_gdp",
        "dimension_code": "new_industries",
        "unit_code": "percent",
        "period": 2023,
        "value": 41.9,
        "value_text": "41.9%",
        "qualifier": "exact",
        "is_derived": False,
        "formula": None,
        "derived_from": [],
        "source_id": 1,
        "quote": "2023年，深圳战略性新兴产业增加值达 1.45 万亿元，占地区生产总值的比重为 41.9%。",
        "note": None,
        "version": 1,
    }


async def test_city_groups_latest_values_by_dimension(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/cities/ningbo")).json()
    assert (body["code"], body["name_zh"], body["name_en"], body["admin_level"]) == (
        "ningbo",
        "宁波",
        "Ningbo",
        "sub_provincial",
    )
    assert [d["code"] for d in body["dimensions"]] == [
        "new_drivers",
        "new_industries",
        "new_models",
        "new_production_relations",
    ]
    latest = {d["code"]: [o["indicator_code"] for o in d["latest"]] for d in body["dimensions"]}
    assert latest == {
        "new_drivers": [],
        "new_industries": [
            "ic_output",
            "ic_output_growth_5y",
            "nev_output",
            "sei_va_share_industrial_va",
        ],
        "new_models": ["national_green_factory_count", "national_green_factory_rank_subprovincial"],
        "new_production_relations": [],
    }
    roles = [(i["role"], i["name_zh"]) for i in body["industries"]]
    assert roles.count(("anchor", "集成电路")) == 1
    assert [n for r, n in roles if r == "future"] == [
        "人工智能",
        "人形机器人",
        "柔性电子",
        "石墨烯",
    ]
    assert len(roles) == 15


async def test_city_latest_values_are_the_latest_observations(client: httpx.AsyncClient) -> None:
    """The same items, derived_from included, as the list's `latest=true` for the city."""
    body = (await client.get("/api/v1/cities/ningbo")).json()
    latest = [o for d in body["dimensions"] for o in d["latest"]]
    listed = await get_all(client, "/api/v1/observations", city="ningbo", latest="true")
    assert sorted(latest, key=lambda o: o["id"]) == listed
    assert [(o["id"], o["derived_from"]) for o in latest if o["is_derived"]] == [(25, [23, 24])]


async def test_dimension_lists_cities_per_indicator(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/dimensions/new_industries")).json()
    coverage = {i["code"]: i["cities"] for i in body["indicators"]}
    assert coverage["nev_output"] == ["changzhou", "ningbo"]
    assert coverage["sei_va_share_gdp"] == ["shenzhen"]
    assert body["name_zh"] == "新产业"
    assert body["description_zh"].startswith("新产业是新质生产力的主阵地")


@pytest.mark.parametrize(
    ("dimension", "codes"),
    [
        (
            "new_models",
            ["national_green_factory_count", "national_green_factory_rank_subprovincial"],
        ),
        (
            "new_production_relations",
            [
                "sz90_rd_funding_from_firms",
                "sz90_rd_institutions_in_firms",
                "sz90_rd_personnel_in_firms",
            ],
        ),
    ],
)
async def test_indicators_filter_by_dimension(
    client: httpx.AsyncClient, dimension: str, codes: list[str]
) -> None:
    body = (await client.get("/api/v1/indicators", params={"dimension": dimension})).json()
    assert [i["code"] for i in body["items"]] == codes
    assert body["total"] == len(codes)


async def test_indicator_detail(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/indicators/nev_output")).json()
    assert body["basis"] == {
        "numerator": "Complete new-energy vehicles produced",
        "denominator": None,
        "scope": "City; calendar year",
    }
    assert body["unit"] == {
        "code": "vehicles",
        "name_zh": "辆",
        "name_en": "vehicles",
        "symbol": "辆",
    }
    assert (body["family"], body["dimension_code"]) == (None, "new_industries")


async def test_cors_exposes_paging_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/cities", headers={"Origin": "https://example.org"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert set(response.headers["access-control-expose-headers"].split(", ")) == {
        "Link",
        "ETag",
        "Content-Disposition",
    }
    preflight = await client.options(
        "/api/v1/observations",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "database": "ok"})


@pytest.mark.parametrize("url", ["/healthz", "/api/v1/cities", "/api/v1/observations.csv", "/docs"])
async def test_head_answers_like_get_without_body(client: httpx.AsyncClient, url: str) -> None:
    get = await client.get(url)
    head = await client.head(url)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"] == get.headers["content-type"]


async def test_large_json_is_gzipped_on_request(client: httpx.AsyncClient) -> None:
    plain = await client.get("/api/v1/observations", headers={"Accept-Encoding": "identity"})
    packed = await client.get("/api/v1/observations", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content) / 4
    assert packed.json() == plain.json()  # httpx decodes it


async def test_cached_answers_get_each_callers_cors_headers(client: httpx.AsyncClient) -> None:
    first = await client.get("/api/v1/cities/ningbo", headers={"Origin": "https://a.example"})
    second = await client.get("/api/v1/cities/ningbo", headers={"Origin": "https://b.example"})
    assert first.content == second.content
    assert first.headers["etag"] == second.headers["etag"]
    assert second.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in (await client.get("/api/v1/cities/ningbo")).headers


async def test_concurrent_misses_for_one_url_are_answered_once(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same uncached URL asked 20 times at once is computed once; the others wait for it
    (app/caching.py). A URL that fails is not shared: each asker gets its own answer."""
    asked: list[str] = []

    def counted(session: Session, code: str) -> list[dict[str, object]]:
        asked.append(code)
        return dimension_coverage(session, code)

    monkeypatch.setattr(dimensions, "dimension_coverage", counted)
    url = "/api/v1/dimensions/new_models"
    responses = await asyncio.gather(*(client.get(url) for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.content for r in responses}) == 1
    assert asked == ["new_models"]
    missing = await asyncio.gather(
        *(client.get("/api/v1/dimensions/old_drivers") for _ in range(3))
    )
    assert [r.status_code for r in missing] == [404] * 3


def test_a_read_sees_one_snapshot(app: FastAPI) -> None:
    """Every statement of one read (a page and its count, an export's batches and the cells
    fetched between them) sees the data as the first one saw it, not a write committed
    meanwhile. On PostgreSQL that takes REPEATABLE READ: a transaction alone would not do it
    (app/db.py, make_engine)."""
    notes = text("SELECT notes FROM city WHERE code = 'ningbo'")
    with Session(app.state.engine) as session:
        first = session.execute(notes).scalar_one()
        with app.state.write_engine.begin() as connection:
            connection.execute(text("UPDATE city SET notes = 'changed' WHERE code = 'ningbo'"))
        again = session.execute(notes).scalar_one()
    with Session(app.state.engine) as session:
        after = session.execute(notes).scalar_one()
    assert first != "changed"
    assert (again, after) == (first, "changed")
