"""Starlette app for tests/frameworks: routes, path params, lifespan state, streaming, a WebSocket."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.apps.fw_common import record


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    record("lifespan", f"startup {os.getpid()}")
    yield {"greeting": "hello from starlette lifespan"}
    record("lifespan", f"shutdown {os.getpid()}")


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello starlette")


async def user(request: Request) -> JSONResponse:
    return JSONResponse({"user_id": request.path_params["user_id"], "q": request.query_params.get("q")})


async def echo(request: Request) -> JSONResponse:
    form = await request.form()
    return JSONResponse({"form": dict(form), "greeting": request.state.greeting})


async def stream(request: Request) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"{i}\n".encode()

    return StreamingResponse(numbers(), media_type="text/plain")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"starlette: {text}")


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/users/{user_id:int}", user),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        WebSocketRoute("/ws", ws_echo),
    ],
    lifespan=lifespan,
)
