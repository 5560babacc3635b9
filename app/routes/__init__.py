"""One router per resource; app.main serves their routes, all under API_PREFIX but /healthz."""

from typing import Any

from fastapi import Path

from app.models import CODE_PATTERN

API_PREFIX = "/api/v1"


def code_path(what: str, example: str) -> Any:
    """The `{code}` path parameter of a resource looked up by code."""
    return Path(
        max_length=64,
        pattern=CODE_PATTERN,
        description=f"{what} code.",
        openapi_examples={example: {"value": example}},
    )
