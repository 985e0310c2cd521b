"""What every stream cycle shares: settings, the client-gone error, wake-ups, the send gate.

``HttpCycle`` (cycle.py) and ``WebSocketCycle`` (websocket.py) both run one
ASGI app over an injected ``emit`` and park the app in two places: in
``receive()`` until the front end sends something, and in ``send()`` while the
stream's send window is spent (PROTOCOL.md Rule 16). Those two waits live here
(``Wakeup``; ``CreditGate`` for the WebSocket, whose HTTP sibling keeps its
window as an int), and ``EndOfTick``, which flushes what responses held back
for coalescing once the app yields.

Memory matters: a worker may hold 10,000 idle WebSockets. ``asyncio.Event``
costs ~1.1 KB (a dict and a preallocated deque); a ``Wakeup`` is one slot
until someone actually waits, and then one future per waiter.
Invariant: a waiter re-checks its condition after every wake-up, so spurious
wake-ups are harmless and a wake-up with nobody waiting is simply dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr

from wire import DEFAULT_LIMITS, SendWindow

log = logging.getLogger(__name__)

RESPONSE_CHUNK_BYTES = 1024 * 1024  # Rule 16: one ZeroMQ frame and one client write per MiB; small enough to interleave streams
Emit = Callable[[Any], None]
Defer = Callable[[Callable[[], None]], Any]  # EndOfTick.defer, or the loop's call_soon


@mypyc_attr(native_class=False)  # compiled (wire/compiled.py), and mypyc cannot subclass OSError natively
class ClientDisconnected(OSError):
    """The client went away (or the stream was reset): ``send()`` cannot deliver.

    Not an error: the worker logs it at debug only (ASGI spec: servers should
    not log it as an error). An OSError, as the ``websockets`` library and
    uvicorn-era apps expect.
    """


@dataclass(frozen=True, slots=True, eq=False)
class StreamSettings:
    """What every stream of one connection shares, fixed at WELCOME."""

    request_window_bytes: int  # HELLO.window_bytes: what the front end may send us
    response_window_bytes: int  # WELCOME.window_bytes: what we may send it
    chunk_bytes: int = RESPONSE_CHUNK_BYTES
    request_slack_bytes: int = DEFAULT_LIMITS.max_payload_bytes  # Rule 16's one-event overrun
    max_payload_bytes: int = DEFAULT_LIMITS.max_payload_bytes  # WELCOME: largest payload per event
    trailers: bool = True  # front end accepted feature "trailers"
    pathsend: bool = False  # front end accepted feature "pathsend"
    ws_denial: bool = False  # front end accepted feature "ws-denial"
    handoff: bool = False  # front end accepted feature "handoff" (zasgi.websocket.handoff)
    early_hints: bool = False  # front end accepted feature "early-hints" (http.response.early_hint)
    state: dict[str, Any] | None = None  # lifespan state; each scope gets a shallow copy


class Wakeup:
    """Park coroutines until ``set()``; one future per waiter, nothing while nobody waits.

    Unlike ``asyncio.Event`` there is no stored flag: ``set()`` with nobody
    waiting is a no-op, so callers loop ``while not condition: await wait()``.
    Cancelling one waiter never disturbs another.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    async def wait(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Tested through a local: mypy would keep ``self._waiters`` narrowed (not None) across
        # the await below, and the compiled read after it would check that; set() empties it.
        waiters = self._waiters
        if waiters is None:
            self._waiters = [future]
        else:
            waiters.append(future)
        try:
            await future
        finally:
            waiters = self._waiters
            if waiters is not None and future in waiters:  # cancelled before set()
                waiters.remove(future)
                if not waiters:
                    self._waiters = None

    def set(self) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters is not None:
            for future in waiters:
                if not future.done():
                    future.set_result(None)


class EndOfTick:
    """Run callbacks once the loop's current batch of ready work is done: one ``call_soon`` for all.

    A response holds back what may be coalesced (a start waiting for its body,
    small chunks) until the app yields. The cycles of one connection share one
    of these instead of a loop handle each: a ``call_soon`` costs ~0.7 µs, an
    append 0.05. Callbacks run in the order they were deferred; one that raises
    is logged (as the loop would) and does not stop the others.
    """

    __slots__ = ("_loop", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[Callable[[], None]] | None = None

    def defer(self, callback: Callable[[], None]) -> None:
        due = self._due
        if due is None:
            self._due = [callback]
            self._loop.call_soon(self._run)
        else:
            due.append(callback)

    def _run(self) -> None:
        due, self._due = self._due, None
        for callback in due or ():
            try:
                callback()
            except Exception:
                log.exception("exception in deferred callback %r", callback)


class CreditGate(SendWindow):
    """A stream's send window (Rule 16) plus the senders parked on it until CREDIT."""

    __slots__ = ("_wakeup",)

    def __init__(self, initial_bytes: int) -> None:
        super().__init__(initial_bytes)
        self._wakeup = Wakeup()

    def grant(self, n: int) -> None:
        super().grant(n)
        self._wakeup.set()

    def release(self) -> None:
        """The stream ended: wake parked senders so they see it."""
        self._wakeup.set()

    async def wait(self, live: Callable[[], bool]) -> None:
        """Return once the window is open or ``live()`` turned false."""
        while not self.open and live():
            await self._wakeup.wait()


def checked_headers(headers: Any) -> tuple[tuple[bytes, bytes], ...]:
    """The app's headers as a tuple of (bytes, bytes); RuntimeError for anything else."""
    try:
        out = tuple(headers)
        for pair in out:
            if type(pair) is not tuple:  # [name, value] lists and the like: copied as tuples
                out = tuple([(name, value) for name, value in out])
                break
        for name, value in out:
            if type(name) is not bytes or type(value) is not bytes:
                raise TypeError
    except (TypeError, ValueError):
        raise RuntimeError(f"headers must be (bytes, bytes) pairs, got {headers!r:.200}") from None
    return out
