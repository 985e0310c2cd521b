"""Litestar app for tests/frameworks: a route with a typed path parameter and a JSON POST."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get, post


@get("/")
async def hello() -> str:
    return "hello litestar"


@get("/books/{book_id:int}")
async def book(book_id: int) -> dict[str, Any]:
    return {"book_id": book_id}


@post("/books")
async def add_book(data: dict[str, Any]) -> dict[str, Any]:
    return {"added": data}


app = Litestar(route_handlers=[hello, book, add_book])
