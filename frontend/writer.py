"""What the request path needs of a request's writer: one type for HTTP/1's and HTTP/2's.

``http_requests`` drives a request the same way whichever protocol it came
on; its writer is ``response.ResponseWriter`` (HTTP/1) or
``h2_exchange.H2Exchange`` (HTTP/2): two classes with the same names, not a
common base. ``RequestWriter`` says what those names are, so both type-check
(mypy --strict) and the compiled request path (wire/compiled.py) accepts
either: a Protocol is any object to mypyc, a concrete class only itself.
Types only: nothing here runs per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wire import events as ev

    from .pool import WorkerRecord
    from .stream import HttpStream


class RequestMessage(Protocol):
    """The parsed request (aiohttp's ``RawRequestMessage``, or ``h2_exchange.Message``)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...  # the target as sent (surrogate-escaped)
    @property
    def version(self) -> Any: ...  # (major, minor)
    @property
    def headers(self) -> Any: ...  # a CIMultiDictProxy
    @property
    def raw_headers(self) -> Any: ...  # the (name, value) byte pairs


class ClientConnection(Protocol):
    """The writer's connection (``connection.Connection`` or ``h2_connection.H2Protocol``)."""

    tls: Any  # the request path's per-connection cache of the TLS extension

    @property
    def transport(self) -> Any: ...
    @property
    def paused(self) -> bool: ...  # the socket is full: ``drain`` before the next request
    @property
    def addresses(self) -> tuple[Any, Any]: ...  # (client, server)


class RequestWriter(Protocol):
    """One request's sink: where its response goes, and what the access log reads after."""

    rid: str
    worker: WorkerRecord | None
    client: tuple[str, int] | None
    client_set: bool
    pending: Any  # its task, its place in the queue (a future), or its stream awaiting the first event
    done: bool  # finished, or its client gone
    status: int
    bytes_out: int

    @property
    def conn(self) -> ClientConnection: ...
    @property
    def message(self) -> RequestMessage: ...
    @property
    def payload(self) -> Any: ...  # the body's reader (aiohttp's EMPTY_PAYLOAD without one)
    @property
    def started(self) -> float: ...  # perf_counter() at the request's start

    def whole(self, stream: HttpStream, start: ev.Response) -> bool: ...
    async def respond(self, stream: HttpStream, start: ev.Response) -> None: ...
    def error(self, status: int, *, retry_after_s: float | None = None, keep_alive: bool = False) -> None: ...
    async def write_continue(self) -> None: ...
    def early_hints(self, links: tuple[bytes, ...]) -> None: ...
    async def drain(self) -> None: ...
    def abort(self, stream: HttpStream | None = None, why: Any = None) -> None: ...
    def finish(self) -> None: ...
