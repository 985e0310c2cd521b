"""bench.py's "fastapi" case: what a realistic endpoint costs (issue 16).

A path parameter, a query parameter and a pydantic response model of about
1 KiB of JSON, served under /fastapi/ by bench_app.py (identical under every
server).
"""

from __future__ import annotations

from fastapi import FastAPI, Query
from pydantic import BaseModel

app = FastAPI()


class Tag(BaseModel):
    name: str
    weight: float


class Item(BaseModel):
    id: int
    name: str
    description: str
    price: float
    tax: float | None = None
    tags: list[Tag]
    q: str | None = None


_DESCRIPTION = "A thing that a shop sells, described at the length a product page would. " * 9
_TAGS = [Tag(name=f"tag-{i}", weight=i / 10) for i in range(8)]


@app.get("/fastapi/items/{item_id}", response_model=Item)
async def read_item(item_id: int, q: str | None = Query(default=None, max_length=50)) -> Item:
    return Item(id=item_id, name=f"item {item_id}", description=_DESCRIPTION, price=9.99, tax=1.5,
                tags=_TAGS, q=q)  # fmt: skip
