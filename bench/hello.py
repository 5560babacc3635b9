"""The ceiling: a bare Starlette JSON hello-world, served by bench/run.py exactly like the app
(uvicorn, one worker, the app's virtualenv, LOG_LEVEL=warning)."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


app = Starlette(routes=[Route("/", hello)])
