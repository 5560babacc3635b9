"""Every figure in the source article is served with its qualifier, value text and quote."""

import re
from typing import Any

import httpx
import pytest

from tests.conftest import ARTICLE, get_all, seed_rows

pytestmark = pytest.mark.anyio

ARTICLE_TEXT = re.sub(r"\s+", "", ARTICLE.read_text(encoding="utf-8"))


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


# The article's figures, read independently of the seed files:
# (city, indicator, period, value, qualifier)
ARTICLE_FIGURES = [
    ("shenzhen", "sz90_local_innovative_firms", None, 90, "at_least"),
    ("shenzhen", "sz90_rd_institutions_in_firms", None, 90, "at_least"),
    ("shenzhen", "sz90_rd_personnel_in_firms", None, 90, "at_least"),
    ("shenzhen", "sz90_rd_funding_from_firms", None, 90, "at_least"),
    ("shenzhen", "sz90_service_invention_patents_from_firms", None, 90, "at_least"),
    ("shenzhen", "sz90_major_project_patents_from_leaders", None, 90, "at_least"),
    ("shenzhen", "firm_basic_research_share_national", None, 50, "nearly"),
    ("shenzhen", "national_hte_count", None, 24000, "more_than"),
    ("shenzhen", "national_hte_density", None, 12, "exact"),
    ("shenzhen", "national_hte_density_rank", None, 1, "exact"),
    ("shenzhen", "sei_va", 2023, 14500, "exact"),
    ("shenzhen", "sei_va_share_gdp", 2023, 41.9, "exact"),
    ("hefei", "national_lab_count", None, 15, "exact"),
    ("hefei", "big_science_facility_count", None, 13, "exact"),
    ("hefei", "global_research_city_rank", None, 13, "exact"),
    ("hefei", "national_innovative_city_rank", None, 10, "at_most"),
    ("hefei", "sei_output_share_industrial_output", 2023, 56.2, "exact"),
    ("changzhou", "power_battery_shipment_rank", None, 1, "exact"),
    ("changzhou", "power_battery_doubling_years", None, 3, "exact"),
    ("changzhou", "power_battery_national_share", None, 20, "exact"),
    ("changzhou", "power_battery_chain_completeness", None, 97, "exact"),
    ("changzhou", "global_top10_battery_firms_present", None, 4, "exact"),
    ("changzhou", "nev_output", 2023, 680000, "exact"),
    ("changzhou", "nev_output_multiple_of_ningbo", 2023, 3.6, "exact"),
    ("ningbo", "nev_output", 2023, 680000 / 3.6, "approximately"),
    ("ningbo", "ic_output", 2023, 545, "exact"),
    ("ningbo", "ic_output_growth_5y", 2023, 23, "exact"),
    ("ningbo", "sei_va_share_industrial_va", 2023, 25.2, "exact"),
    ("ningbo", "national_green_factory_count", None, 98, "exact"),
    ("ningbo", "national_green_factory_rank_subprovincial", None, 2, "exact"),
]


async def observation(client: httpx.AsyncClient, city: str, indicator: str) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/observations", params={"city": city, "indicator": indicator}
    )
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 1
    return items[0]


@pytest.mark.parametrize(("city", "indicator", "period", "value", "qualifier"), ARTICLE_FIGURES)
async def test_article_figure_is_served(
    client: httpx.AsyncClient,
    city: str,
    indicator: str,
    period: int | None,
    value: float,
    qualifier: str,
) -> None:
    row = await observation(client, city, indicator)
    assert (row["period"], row["value"], row["qualifier"], row["source_id"]) == (
        period,
        value,
        qualifier,
        1,
    )
    assert squeeze(row["quote"]) in ARTICLE_TEXT


async def test_every_seeded_observation_is_an_article_figure(client: httpx.AsyncClient) -> None:
    served = await get_all(client, "/api/v1/observations")
    keys = {(o["city_code"], o["indicator_code"], o["period"]) for o in served}
    assert keys == {(c, i, p) for c, i, p, _, _ in ARTICLE_FIGURES}
    assert len(served) == len(ARTICLE_FIGURES) == 30


@pytest.mark.parametrize(
    "row", seed_rows("observations.csv"), ids=lambda r: f"{r['city_code']}-{r['indicator_code']}"
)
async def test_seed_row_served_verbatim(client: httpx.AsyncClient, row: dict[str, str]) -> None:
    served = await observation(client, row["city_code"], row["indicator_code"])
    assert served["quote"] == row["quote"]
    assert served["value_text"] == row["value_text"]
    assert served["unit_code"] == row["unit_code"]
    assert served["note"] == (row["note"] or None)
    if row["is_derived"] == "false":
        # what was written is in the quote it was read from
        assert squeeze(row["value_text"]) in squeeze(row["quote"])


@pytest.mark.parametrize(
    "row", seed_rows("city_industries.csv"), ids=lambda r: f"{r['city_code']}-{r['name_zh']}"
)
def test_industry_quote_is_verbatim(row: dict[str, str]) -> None:
    assert squeeze(row["quote"]) in ARTICLE_TEXT
    assert row["name_zh"] in row["quote"]


async def test_ningbo_nev_output_is_derived_from_changzhou(client: httpx.AsyncClient) -> None:
    ningbo = await observation(client, "ningbo", "nev_output")
    output = await observation(client, "changzhou", "nev_output")
    multiple = await observation(client, "changzhou", "nev_output_multiple_of_ningbo")
    assert ningbo["is_derived"] is True
    assert ningbo["value"] == output["value"] / multiple["value"]
    assert ningbo["derived_from"] == sorted([output["id"], multiple["id"]])
    assert ningbo["formula"].endswith("= 680000 / 3.6")
    assert (output["is_derived"], output["formula"], output["derived_from"]) == (False, None, [])


async def test_sei_shares_form_one_family_on_three_bases(client: httpx.AsyncClient) -> None:
    family = (await client.get("/api/v1/indicators/sei_va_share_gdp")).json()["family"]
    assert family["indicators"] == [
        "sei_output_share_industrial_output",
        "sei_va_share_gdp",
        "sei_va_share_industrial_va",
    ]
    bases = [
        (await client.get(f"/api/v1/indicators/{code}")).json()["basis"]
        for code in family["indicators"]
    ]
    assert len({(b["numerator"], b["denominator"]) for b in bases}) == 3
    assert "must not be ranked" in family["note"]


async def test_every_dimension_has_indicators(client: httpx.AsyncClient) -> None:
    counts = {}
    for code in ("new_drivers", "new_industries", "new_models", "new_production_relations"):
        body = (await client.get(f"/api/v1/dimensions/{code}")).json()
        counts[code] = len(body["indicators"])
        assert all(i["cities"] for i in body["indicators"])
    assert counts == {
        "new_drivers": 11,
        "new_industries": 13,
        "new_models": 2,
        "new_production_relations": 3,
    }


async def test_hangzhou_is_a_city_without_figures(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/cities/hangzhou")).json()
    assert [len(d["latest"]) for d in body["dimensions"]] == [0, 0, 0, 0]
    assert body["industries"] == []
    rows = (await client.get("/api/v1/observations", params={"city": "hangzhou"})).json()
    assert rows["total"] == 0


async def test_source_records_what_the_text_shows(client: httpx.AsyncClient) -> None:
    source = (await client.get("/api/v1/sources/1")).json()
    assert (source["title"], source["reporter"], source["interviewee"]) == (
        "刘尚海：发展新质生产力要多维协同发力",
        "殷聪",
        "刘尚海",
    )
    assert (source["published_on"], source["published_inferred"], source["reference_year"]) == (
        None,
        "2024-03",
        2024,
    )
    assert squeeze(source["title"]) in ARTICLE_TEXT
    assert squeeze(source["interviewee_title"]) in ARTICLE_TEXT
