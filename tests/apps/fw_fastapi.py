"""FastAPI app for tests/frameworks: validation, path params, a dependency, streaming,
background tasks (recorded in $PROBE_DIR after the response), a WebSocket."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tests.apps.fw_common import record

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


def current_user(x_token: Annotated[str | None, Header()] = None) -> str:
    if x_token != "secret":
        raise HTTPException(status_code=401, detail="bad token")
    return "alice"


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item) -> dict[str, object]:
    return {"name": item.name, "price_cents": round(item.price * 100)}


@app.get("/me")
async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
    return {"user": user}


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        for i in range(n):
            await asyncio.sleep(0)
            yield f"line {i}\n".encode()

    return StreamingResponse(lines(), media_type="text/plain")


async def slow_job(tag: str) -> None:
    # Waits for the test to say it has the response: proof the response did not wait for the task.
    release = Path(os.environ.get("PROBE_DIR", ".")) / f"release-{tag}"
    for _ in range(1500):
        if release.exists():
            record("background", f"{tag} released")
            return
        await asyncio.sleep(0.02)
    record("background", f"{tag} timed out")


@app.post("/jobs/{tag}", status_code=202)
async def start_job(tag: str, background: BackgroundTasks) -> dict[str, str]:
    background.add_task(slow_job, tag)
    return {"queued": tag}


@app.get("/sync")
def sync_route() -> dict[str, str]:  # FastAPI runs plain functions in its thread pool
    return {"sync": "ok"}


@app.websocket("/ws/{room}")
async def ws_room(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"room": room, "echo": data})
    except WebSocketDisconnect:
        pass
