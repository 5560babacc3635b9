"""CSV exports: RFC 4180, UTF-8 with an opt-in BOM, every matching row, formula-safe."""

import csv
import dataclasses
import io
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session, select

from app.config import Settings
from app.db import make_engine
from app.export import Export, cell, observations_export
from app.models import Observation
from app.queries import ObservationFilter
from tests.conftest import FLOATS, TEXTS, get_all, postgresql_only

pytestmark = pytest.mark.anyio


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.mark.parametrize(
    ("url", "filename", "rows"),
    [
        ("/api/v1/observations.csv", "observations.csv", 30),
        ("/api/v1/observations.csv?city=ningbo,changzhou&year_from=2023", "observations.csv", 6),
        ("/api/v1/observations.csv?dimension=new_models", "observations.csv", 2),
        ("/api/v1/cities.csv", "cities.csv", 5),
        ("/api/v1/indicators.csv", "indicators.csv", 29),
        ("/api/v1/indicators.csv?dimension=new_drivers", "indicators.csv", 11),
    ],
)
async def test_csv_headers_and_rows(
    client: httpx.AsyncClient, url: str, filename: str, rows: int
) -> None:
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'
    assert not response.content.startswith(b"\xef\xbb\xbf")
    lines = response.content.split(b"\r\n")
    assert lines[-1] == b""
    assert b"\n" not in b"".join(lines)  # CRLF only, no bare LF inside or between records
    assert len(parse(response.text)) == rows


async def test_bom_is_opt_in(client: httpx.AsyncClient) -> None:
    plain = await client.get("/api/v1/cities.csv")
    excel = await client.get("/api/v1/cities.csv", params={"bom": "true"})
    assert excel.content == b"\xef\xbb\xbf" + plain.content
    assert excel.content.decode("utf-8-sig") == plain.text


async def test_observations_csv_round_trips_the_json(client: httpx.AsyncClient) -> None:
    rows = parse((await client.get("/api/v1/observations.csv")).text)
    items = await get_all(client, "/api/v1/observations")
    assert len(rows) == len(items) == 30
    by_id = {str(item["id"]): item for item in items}
    for row in rows:
        item = by_id[row["id"]]
        assert float(row["value"]) == item["value"]
        assert row["period"] == ("" if item["period"] is None else str(item["period"]))
        assert row["is_derived"] == ("true" if item["is_derived"] else "false")
        for column in (
            "city_code",
            "indicator_code",
            "dimension_code",
            "unit_code",
            "qualifier",
            "value_text",
            "quote",
        ):
            assert row[column] == item[column]
        assert row["note"] == (item["note"] or "")


async def test_csv_names_derivation_inputs_by_key(client: httpx.AsyncClient) -> None:
    rows = parse(
        (
            await client.get(
                "/api/v1/observations.csv", params={"city": "ningbo", "indicator": "nev_output"}
            )
        ).text
    )
    assert [r["derived_from"] for r in rows] == [
        "changzhou/nev_output/2023;changzhou/nev_output_multiple_of_ningbo/2023"
    ]
    assert rows[0]["value"] == repr(680000 / 3.6)


async def test_csv_keeps_chinese_text(client: httpx.AsyncClient) -> None:
    rows = parse((await client.get("/api/v1/cities.csv")).text)
    assert [(r["code"], r["name_zh"]) for r in rows] == [
        ("changzhou", "常州"),
        ("hangzhou", "杭州"),
        ("hefei", "合肥"),
        ("ningbo", "宁波"),
        ("shenzhen", "深圳"),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("近五成", "近五成"),
        ("a=b", "a=b"),
        (-12.5, -12.5),
        (-3.0, -3.0),
        (41.9, 41.9),
        (24000.0, 24000.0),
        (2023, 2023),
        (None, ""),
        (True, "true"),
        (False, "false"),
    ],
)
def test_cell_neutralises_formulas_in_text_only(value: object, expected: object) -> None:
    assert cell(value) == expected


async def test_exported_formula_text_is_neutralised_and_negative_numbers_kept(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    with Session(app.state.engine) as session, session.begin():
        session.add(
            Observation(
                city_code="hangzhou",
                indicator_code="ic_output_growth_5y",
                period=2020,
                value=-12.5,
                value_text="=1+2",
                qualifier="exact",
                source_id=1,
                quote="@cmd|' /C calc'!A0",
                note="-note",
            )
        )
    rows = parse((await client.get("/api/v1/observations.csv", params={"city": "hangzhou"})).text)
    assert [(r["value"], r["value_text"], r["quote"], r["note"]) for r in rows] == [
        ("-12.5", "'=1+2", "'@cmd|' /C calc'!A0", "'-note")
    ]


@pytest.mark.parametrize("batch_rows", [1, 7, 30, 10_000])
def test_export_is_the_same_in_any_batch_size(app: FastAPI, batch_rows: int) -> None:
    """Batches come from one cursor while derived_from is looked up between them: every row
    arrives once, in id order, with the derived row's inputs named (ids 23 and 24)."""
    export = dataclasses.replace(observations_export(ObservationFilter()), batch_rows=batch_rows)
    out = io.BytesIO()
    export.write(app.state.engine, out)
    rows = parse(out.getvalue().decode())
    assert [int(r["id"]) for r in rows] == list(range(1, 31))
    assert [r["id"] for r in rows if r["derived_from"]] == ["25"]
    assert rows[24]["derived_from"] == (
        "changzhou/nev_output/2023;changzhou/nev_output_multiple_of_ningbo/2023"
    )


async def test_edge_cells_are_exported_as_cell_and_repr_write_them(
    client: httpx.AsyncClient, app: FastAPI, edge_rows: None
) -> None:
    text = (await client.get("/api/v1/observations.csv", params={"city": "hangzhou"})).text
    rows = {int(r["period"]): r for r in parse(text)}
    assert [
        (rows[1900 + i]["value_text"], rows[1900 + i]["quote"], rows[1900 + i]["note"])
        for i in range(len(TEXTS))
    ] == [(cell(t), cell(t), cell(t)) for t in TEXTS]
    with Session(app.state.engine) as session:  # as stored: SQLite keeps -0.0 as 0
        stored = session.exec(
            select(Observation.value)
            .where(Observation.period.between(1950, 1999))  # type: ignore[union-attr]
            .order_by(Observation.period)
        ).all()
    assert len(stored) == len(FLOATS)
    assert [rows[1950 + i]["value"] for i in range(len(FLOATS))] == [repr(v) for v in stored]
    cities = {r["code"] for r in parse((await client.get("/api/v1/cities.csv")).text)}
    assert {"'=first", "'-first", "plain,first"} <= cities


@postgresql_only
@pytest.mark.parametrize("digits", [-14, 0, 3])
def test_floats_are_read_exactly_whatever_the_database_sets_for_extra_float_digits(
    settings: Settings, app: FastAPI, edge_rows: None, digits: int
) -> None:
    """psycopg reads floats as text. At extra_float_digits 0 or below PostgreSQL prints at
    most 15 digits: 0.30000000000000004 would be read as 0.3, and the largest double
    (1.79769313486232e+308) not at all. The engine sets 1 for its own sessions."""
    with app.state.engine.connect() as connection:
        database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
    admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'ALTER DATABASE "{database}" SET extra_float_digits = {digits}')
    engine = make_engine(settings)
    try:
        with admin.connect() as connection:  # a session of the database's own setting
            third = connection.exec_driver_sql("SELECT CAST(1 / 3.0::float8 AS text)").scalar_one()
        assert third == {-14: "0.3", 0: "0.333333333333333", 3: "0.3333333333333333"}[digits]
        with Session(engine) as session:
            stored = session.exec(
                select(Observation.value)
                .where(Observation.period.between(1950, 1999))  # type: ignore[union-attr]
                .order_by(Observation.period)
            ).all()
        assert [repr(v) for v in stored] == [repr(v) for v in FLOATS]
        out = io.BytesIO()
        observations_export(ObservationFilter(year_from=1950, year_to=1999)).write(engine, out)
        assert [r["value"] for r in parse(out.getvalue().decode())] == [repr(v) for v in FLOATS]
    finally:
        engine.dispose()
        admin.dispose()


async def test_a_csv_stream_does_not_hold_up_the_same_url_asked_meanwhile(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent misses for one URL wait for the first answer only when it can be cached
    (app/caching.py): a second download of a CSV still streaming is not made to wait for it."""
    reached, gate = threading.Event(), threading.Event()
    streams: list[int] = []
    chunks = Export.chunks

    def held_first(self: Export, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        streams.append(len(streams))
        for i, chunk in enumerate(chunks(self, *args, **kwargs)):
            yield chunk
            if streams[0] == 0 and len(streams) == 1 and i == 0:
                reached.set()
                gate.wait(30)  # the first stream stops after its header until released

    monkeypatch.setattr(Export, "chunks", held_first)
    url = "/api/v1/observations.csv?city=ningbo"
    async with anyio.create_task_group() as tasks:
        first: list[httpx.Response] = []

        async def ask_first() -> None:
            first.append(await client.get(url))

        tasks.start_soon(ask_first)
        await anyio.to_thread.run_sync(reached.wait, 10)
        with anyio.fail_after(10):
            second = await client.get(url)
        gate.set()
    assert second.status_code == first[0].status_code == 200
    assert second.content == first[0].content
    assert len(streams) == 2
