"""Quart app for tests/frameworks: a route, a JSON POST, a WebSocket."""

from __future__ import annotations

from quart import Quart, request, websocket

app = Quart(__name__)


@app.get("/")
async def hello() -> str:
    return "hello quart"


@app.post("/echo")
async def echo() -> dict[str, object]:
    return {"json": await request.get_json()}


@app.websocket("/ws")
async def ws() -> None:
    while True:
        message = await websocket.receive()
        await websocket.send(f"quart: {message}")
