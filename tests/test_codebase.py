"""The code keeps to public APIs: no private names of a dependency or of another app module,
and every route reachable by FastAPI's own routing (so dependency_overrides reach it)."""

import ast
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import Session

from app.config import ROOT
from app.db import get_session

MODULES = sorted((ROOT / "app").rglob("*.py"))


def private_imports(path: Path) -> list[str]:
    """`from x._y import z`, `from x import _z` and `import x._y`, except dunders."""

    def private(name: str) -> bool:
        return any(p.startswith("_") and not p.startswith("__") for p in name.split("."))

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [a.name for a in node.names]
            if private(node.module) or any(private(n) for n in names):
                found.append(f"from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if private(a.name)]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_private_name(path: Path) -> None:
    assert private_imports(path) == []


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from fastapi._compat import ModelField\nfrom app.db import _x\nimport a._b\n"
        "from app.models import __all__\n",
        encoding="utf-8",
    )
    assert private_imports(module) == [
        "from fastapi._compat import ModelField",
        "from app.db import _x",
        "import a._b",
    ]


class Refused(Exception):
    pass


def no_database() -> Session:
    raise Refused


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/observations",
        "/api/v1/observations.csv",
        "/api/v1/observations/1",
        "/api/v1/cities",
        "/api/v1/cities/ningbo",
        "/api/v1/indicators",
        "/api/v1/dimensions/new_models",
        "/api/v1/sources",
    ],
)
async def test_dependency_overrides_reach_every_read_route(app: FastAPI, url: str) -> None:
    """Routes are FastAPI's own: overriding the session dependency changes what they do."""
    app.dependency_overrides[get_session] = no_database
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(url)
    assert (response.status_code, response.json()["status"]) == (500, 500)
