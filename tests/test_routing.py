"""QueryRoute reads parameters exactly as FastAPI does: the same values, the same errors."""

from contextlib import AsyncExitStack
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, Query, Response
from fastapi.dependencies.utils import solve_dependencies
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.routing import Match

from app.errors import BadRequest
from app.pagination import _links
from app.queries import Slice
from app.routes import cities, observations
from app.routing import Plan, QueryRoute

pytestmark = pytest.mark.anyio


def _route(router: Any, path: str, method: str = "GET") -> APIRoute:
    (route,) = [r for r in router.routes if r.path == path and method in r.methods]
    assert isinstance(route, APIRoute)
    return route


def _request(query: str, path_params: dict[str, str] | None = None) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": query.encode(),
            "headers": [],
            "path_params": path_params or {},
        }
    )


async def _fastapi(route: APIRoute, request: Request) -> tuple[dict[str, Any], list[Any]]:
    async with AsyncExitStack() as stack:
        request.scope["fastapi_inner_astack"] = request.scope["fastapi_function_astack"] = stack
        solved = await solve_dependencies(
            request=request,
            dependant=route.dependant,
            async_exit_stack=stack,
            embed_body_fields=False,
        )
    return solved.values, solved.errors


async def _ours(route: APIRoute, request: Request) -> tuple[dict[str, Any], list[Any]]:
    plan = Plan.of(route.dependant)
    assert plan is not None
    errors: list[Any] = []
    values = await plan.values(request, errors)
    return values, errors


def _comparable(errors: list[Any]) -> list[Any]:
    """Errors with the exceptions in their `ctx` as text (exceptions compare by identity)."""
    return [{**e, "ctx": {k: repr(v) for k, v in e.get("ctx", {}).items()}} for e in errors]


QUERIES = [
    "",
    "city=ningbo&indicator=nev_output&limit=50",
    "city=ningbo,shenzhen&city=hefei&dimension=new_industries",
    "city=&indicator=",
    "year_from=2020&year_to=2024&latest=true",
    "latest=yes&limit=500",
    "latest=maybe",
    "limit=0",
    "limit=501&cursor=abc%21",
    "limit=ten&year_from=1899&year_to=2201",
    "year_from=2024.0",
    "as_of=2026-01-01T00:00:00Z",
    "as_of=2026-01-01T08:00:00%2B08:00&cursor=MTA",
    "as_of=2026-01-01",
    "as_of=yesterday&limit=-1",
    "cursor=" + "A" * 201,
    "unknown=1&limit=5&limit=7",
]


@pytest.mark.parametrize("path", ["/api/v1/observations", "/api/v1/observations.csv"])
@pytest.mark.parametrize("query", QUERIES)
async def test_plan_reads_query_parameters_as_fastapi_does(path: str, query: str) -> None:
    route = _route(observations.router, path)
    request = _request(query)
    theirs = await _fastapi(route, request)
    ours = await _ours(route, request)
    assert ours[0] == theirs[0]
    assert _comparable(ours[1]) == _comparable(theirs[1])


async def _defaults(
    made: Annotated[list[int], Query(default_factory=lambda: [1])],
    tags: Annotated[list[str], Query()] = ["a"],  # noqa: B006  (a mutable default, on purpose)
    checked: Annotated[int, Query(validate_default=True)] = 5,
    plain: str = "x",
    none: int | None = None,
) -> Response:
    return Response()


@pytest.mark.parametrize("query", ["", "tags=b&made=2&checked=7&plain=y&none=3", "checked=z"])
async def test_plan_gives_defaults_as_fastapi_does(query: str) -> None:
    route = APIRoute("/d", _defaults, methods=["GET"])
    theirs = await _fastapi(route, _request(query))
    ours = await _ours(route, _request(query))
    assert ours[0] == theirs[0]
    assert _comparable(ours[1]) == _comparable(theirs[1])


async def test_a_mutable_default_is_a_new_copy_for_each_request() -> None:
    route = APIRoute("/d", _defaults, methods=["GET"])
    first, _ = await _ours(route, _request(""))
    assert (first["tags"], first["made"], first["checked"], first["plain"]) == (["a"], [1], 5, "x")
    first["tags"].append("changed")
    first["made"].append(2)
    again, _ = await _ours(route, _request(""))
    assert (again["tags"], again["made"]) == (["a"], [1])


@pytest.mark.parametrize(
    "query", ["city=Ningbo", "indicator=a;b", "city=" + ",".join(f"c{i}" for i in range(101))]
)
async def test_plan_raises_what_the_dependency_raises(query: str) -> None:
    route = _route(observations.router, "/api/v1/observations")
    with pytest.raises(BadRequest) as theirs:
        await _fastapi(route, _request(query))
    with pytest.raises(BadRequest) as ours:
        await _ours(route, _request(query))
    assert ours.value.detail == theirs.value.detail


@pytest.mark.parametrize(
    ("router", "path", "method", "planned"),
    [
        (observations.router, "/api/v1/observations", "GET", True),
        (observations.router, "/api/v1/observations.csv", "GET", True),
        # sync endpoints, a session, a body or a key: FastAPI's own handler
        (observations.router, "/api/v1/observations/{id}", "GET", False),
        (observations.router, "/api/v1/observations", "POST", False),
        (observations.router, "/api/v1/observations/import", "POST", False),
        (cities.router, "/api/v1/cities", "GET", False),
    ],
)
def test_query_route_plans_only_what_it_can_read(
    router: Any, path: str, method: str, planned: bool
) -> None:
    route = _route(router, path, method)
    assert (Plan.of(route.dependant) is not None) is planned
    handler = route.get_route_handler() if isinstance(route, QueryRoute) else None
    is_ours = handler is not None and handler.__qualname__.startswith(
        "QueryRoute.get_route_handler"
    )
    assert is_ours is planned


LINK_QUERIES = [
    "",
    "limit=2",
    "city=ningbo,shenzhen&limit=2",
    "cursor=MTA&city=ningbo&limit=2",
    "city=ningbo&cursor=MTA&cursor=MjA&city=hefei",
    "q=%E5%AE%81%E6%B3%A2&empty=&a+b=c%26d",
]


@pytest.mark.parametrize("query", LINK_QUERIES)
@pytest.mark.parametrize("next_cursor", [None, "MzA"])
def test_links_are_starlettes_urls_without_and_with_the_cursor(
    query: str, next_cursor: str | None
) -> None:
    """The Link header's URLs, built from the parsed query, are byte for byte what Starlette's
    remove_query_params / include_query_params make (they re-encode the whole query)."""
    request = _request(query)
    request.scope.update(scheme="http", server=("api.example", 8000), root_path="")
    request.scope["headers"] = [(b"host", b"api.example:8000")]
    first = str(request.url.remove_query_params("cursor"))
    expected = f'<{first}>; rel="first"'
    next_url = None
    if next_cursor is not None:
        next_url = str(request.url.include_query_params(cursor=next_cursor))
        expected += f', <{next_url}>; rel="next"'
    assert _links(request, Slice(rows=[], total=0, next_cursor=next_cursor)) == (
        expected,
        next_url,
    )


def test_the_observation_list_is_tried_first_and_the_document_keeps_its_order(
    app: FastAPI,
) -> None:
    scope = {"type": "http", "method": "GET", "path": "/api/v1/observations"}
    first = next(r for r in app.router.routes if r.matches(scope)[0] == Match.FULL)
    assert app.router.routes.index(first) == 0
    assert first.name == "list_observations"
    tags = [op["tags"][0] for path in app.openapi()["paths"].values() for op in path.values()]
    order = ["cities", "dimensions", "indicators", "observations", "sources", "audit", "health"]
    assert list(dict.fromkeys(tags)) == order


async def _page(limit: int = 10) -> int:
    return limit


def _dependant(endpoint: Any) -> Any:
    return APIRoute("/x", endpoint, response_class=Response).dependant


async def _once(a: Annotated[int, Depends(_page)]) -> Response:
    return Response(str(a))


async def _twice(a: Annotated[int, Depends(_page)], b: Annotated[int, Depends(_page)]) -> Response:
    return Response(str(a + b))


async def _with_header(a: Annotated[int, Depends(_page)], h: Annotated[str, Header()]) -> Response:
    return Response(h)


@pytest.mark.parametrize(
    ("endpoint", "planned"), [(_once, True), (_twice, False), (_with_header, False)]
)
def test_a_dependency_used_twice_or_a_header_is_left_to_fastapi(
    endpoint: Any, planned: bool
) -> None:
    """FastAPI calls a dependency used twice once (its cache); headers are not read by plans."""
    assert (Plan.of(_dependant(endpoint)) is not None) is planned
