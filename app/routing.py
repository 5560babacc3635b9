"""Hot GET routes whose inputs are all query or path parameters, read in one plain pass.

For every parameter of every request, FastAPI works out again whether it is a sequence, a
parameter model or a JSON field, and which alias was sent. On the observation list that was
about a seventh of an uncached page (docs/performance.md). A `QueryRoute` works it out once,
when the route is built, then validates each parameter with FastAPI's own field: the same
coercion, defaults and error locations, raised as the same `RequestValidationError`. A route
needing anything else (a body, headers, a sync or yield dependency, a session, a dependency
used twice, which FastAPI would call once) falls back to FastAPI's handler, so the class is
safe on a whole router. The OpenAPI document is FastAPI's:
the route keeps its dependant.
"""

import inspect
from collections.abc import Callable, Coroutine
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi._compat import ModelField, field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import Json

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


# Defaults that FastAPI's deepcopy would hand back unchanged.
IMMUTABLE = (type(None), bool, int, float, str, bytes)
COPIED = object()  # a default to copy (or make) for each request, as FastAPI does


@dataclass(frozen=True)
class Param:
    field: ModelField
    source: str  # "query" or "path"
    many: bool  # a list: every value of a repeated query parameter
    # What FastAPI reads off the field for every request (its alias, whether it is required,
    # its default, copied), read once: 1.6% of an uncached page's instructions.
    loc: tuple[str, str]
    required: bool
    validate_default: bool
    default: Any  # the default itself if immutable, else COPIED

    @classmethod
    def of(cls, field: ModelField, source: str, many: bool) -> "Param":
        info = field.field_info
        immutable = info.default_factory is None and isinstance(info.default, IMMUTABLE)
        return cls(
            field,
            source,
            many,
            loc=(source, field.alias),
            required=info.is_required(),
            validate_default=bool(info.validate_default),
            default=info.default if immutable else COPIED,
        )

    def value(self, request: Request) -> tuple[Any, list[Any]]:
        """The validated value and no errors, or the errors as FastAPI reports them."""
        alias = self.loc[1]
        if self.source == "path":
            raw = request.path_params.get(alias)
        elif self.many:
            raw = request.query_params.getlist(alias) or None
        else:
            raw = request.query_params.get(alias)
        if raw is None:
            if self.required:
                return None, [
                    {"type": "missing", "loc": self.loc, "msg": "Field required", "input": None}
                ]
            default = deepcopy(self.field.default) if self.default is COPIED else self.default
            if not self.validate_default:
                return default, []
            raw = default
        return self.field.validate(raw, {}, loc=self.loc)


@dataclass(frozen=True)
class Plan:
    """How to call one dependant: its parameters, its sub-dependencies, where the request goes."""

    call: Callable[..., Any]
    params: tuple[Param, ...]
    dependencies: tuple[tuple[str, "Plan"], ...]
    request_name: str | None

    @classmethod
    def of(cls, dependant: Dependant) -> "Plan | None":
        """None unless every input is a query or path parameter, the request, or an async
        dependency of the same kind (FastAPI runs sync ones in a worker thread)."""
        call = dependant.call
        if (
            call is None
            or not inspect.iscoroutinefunction(call)
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.http_connection_param_name
            or dependant.websocket_param_name
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or dependant.security_scopes_param_name
        ):
            return None
        params = []
        for source, fields in (("path", dependant.path_params), ("query", dependant.query_params)):
            for f in fields:
                info = f.field_info
                if info.validation_alias is not None or any(type(m) is Json for m in info.metadata):
                    return None
                many = source == "query" and field_annotation_is_sequence(info.annotation)
                params.append(Param.of(f, source, many))
        dependencies: list[tuple[str, Plan]] = []
        for sub in dependant.dependencies:
            plan = cls.of(sub)
            if plan is None or sub.name is None or any(p.call is sub.call for _, p in dependencies):
                return None
            dependencies.append((sub.name, plan))
        return cls(call, tuple(params), tuple(dependencies), dependant.request_param_name)

    async def values(self, request: Request, errors: list[Any]) -> dict[str, Any]:
        """The keyword arguments for `call`; what is invalid goes to `errors` instead."""
        values: dict[str, Any] = {}
        for name, plan in self.dependencies:
            sub_errors: list[Any] = []
            sub_values = await plan.values(request, sub_errors)
            if sub_errors:
                errors.extend(sub_errors)
            else:
                values[name] = await plan.call(**sub_values)
        for p in self.params:
            value, param_errors = p.value(request)
            if param_errors:
                errors.extend(param_errors)
            else:
                values[p.field.name] = value
        if self.request_name is not None:
            values[self.request_name] = request
        return values


class QueryRoute(APIRoute):
    """An APIRoute whose handler reads its parameters by a plan made when the route is built,
    for async endpoints that return a `Response` themselves; any other route is FastAPI's."""

    def get_route_handler(self) -> Handler:
        plan = Plan.of(self.dependant)
        returns = inspect.signature(self.endpoint).return_annotation
        if plan is None or not (inspect.isclass(returns) and issubclass(returns, Response)):
            return super().get_route_handler()

        async def handler(request: Request) -> Response:
            errors: list[Any] = []
            values = await plan.values(request, errors)
            if errors:
                raise RequestValidationError(errors)
            response: Response = await plan.call(**values)
            return response

        return handler
