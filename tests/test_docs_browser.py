"""Swagger UI renders the operations in a real headless Chromium, with no network but loopback."""

import os
import shutil
import subprocess

import httpx
import pytest

from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(
        "chromium is not installed (`apt-get install chromium`); .ci/run installs it",
        allow_module_level=True,
    )


def rendered_dom(url: str, tmp_path: object) -> str:
    assert CHROMIUM, "CI must have chromium: .ci/run installs it"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_swagger_ui_renders_every_operation(live_server: LiveServer, tmp_path: object) -> None:
    dom = rendered_dom(f"{live_server.url}/docs", tmp_path)
    assert 'class="swagger-ui' in dom
    for path in (
        "/api/v1/cities",
        "/api/v1/cities/{code}",
        "/api/v1/dimensions/{code}",
        "/api/v1/indicators",
        "/api/v1/observations",
        "/api/v1/observations.csv",
        "/api/v1/sources/{id}",
        "/healthz",
    ):
        assert f'data-path="{path}"' in dom, path
    operations = httpx.get(f"{live_server.url}/openapi.json").json()["paths"]
    for method in ("get", "post", "patch", "delete"):
        expected = sum(method in ops for ops in operations.values())
        assert dom.count(f'class="opblock opblock-{method}') == expected, method
    assert 'class="btn authorize' in dom  # the security schemes give Swagger its Authorize button


def test_redoc_renders(live_server: LiveServer, tmp_path: object) -> None:
    dom = rendered_dom(f"{live_server.url}/redoc", tmp_path)
    assert "List observations" in dom
    assert "Xinzhi Metrics" in dom
