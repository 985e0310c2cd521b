"""ASGI lifespan: startup before the worker says HELLO, shutdown after it drained.

The app runs in its own task for the whole life of the worker, with a scope
of type ``lifespan`` whose ``state`` dict is created by the server and copied
(shallowly) into every request scope. The app's ``send`` is a dispatch table
on the message type; each answer resolves the phase the server waits on.

How the app can answer startup, and what the worker does (mode "auto" / "on"):

    lifespan.startup.complete            run                 / run
    lifespan.startup.failed(message)     LifespanFailure     / LifespanFailure
    raises after receiving startup       LifespanFailure     / LifespanFailure
    raises before receiving anything     run (unsupported)   / LifespanFailure
    returns without answering            run (unsupported)   / LifespanFailure

"Unsupported" is logged at info, with the exception at debug: frameworks
that do not know lifespan raise on an unknown scope type, which is normal.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import Any

from .config import LifespanMode
from .loader import ASGIApp

log = logging.getLogger(__name__)

SCOPE_ASGI = {"version": "3.0", "spec_version": "2.0"}


class LifespanFailure(Exception):
    """Startup failed; ``str(exc)`` is the app's message, one line."""


class Phase(Enum):
    IDLE = "idle"  # not started (or mode "off")
    STARTING = "starting"  # lifespan.startup sent, no answer yet
    STARTED = "started"
    UNSUPPORTED = "unsupported"  # the app does not do lifespan; nothing to shut down
    FAILED = "failed"
    STOPPING = "stopping"  # lifespan.shutdown sent
    STOPPED = "stopped"


class Lifespan:
    def __init__(self, app: ASGIApp, *, mode: LifespanMode, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = LifespanMode(mode)
        self.state = state  # shared with every request scope (shallow copies)
        self.phase = Phase.IDLE
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._answered = asyncio.Event()  # the app answered the current phase, or ended
        self._received = 0  # messages the app has taken: tells "unsupported" from "crashed"
        self._error: BaseException | None = None
        self._failure_message = ""
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ server side

    async def startup(self) -> None:
        """Run lifespan startup. Raises LifespanFailure when the app says or shows it failed."""
        if self.mode is LifespanMode.OFF:
            return
        self.phase = Phase.STARTING
        self._task = asyncio.get_running_loop().create_task(self._main(), name="lifespan")
        await self._exchange({"type": "lifespan.startup"})
        if self.phase is Phase.STARTED:
            return
        if self.phase is Phase.FAILED:
            raise LifespanFailure(self._failure_message)
        self._on_app_ended_during_startup()

    def _on_app_ended_during_startup(self) -> None:
        error = self._error
        if self._received and error is not None:
            log.error("exception in lifespan startup", exc_info=error)
            self.phase = Phase.FAILED
            raise LifespanFailure(f"{type(error).__name__}: {' '.join(str(error).split())}")
        if self.mode is LifespanMode.ON:
            self.phase = Phase.FAILED
            why = f"raised {type(error).__name__}" if error is not None else "returned"
            raise LifespanFailure(f"lifespan is on, but the app {why} before completing startup")
        self.phase = Phase.UNSUPPORTED
        log.info("ASGI 'lifespan' protocol appears unsupported by the app")
        if error is not None:
            log.debug("lifespan attempt raised", exc_info=error)

    async def shutdown(self, *, timeout_s: float | None = None) -> None:
        """Run lifespan shutdown, if startup completed. Failures are logged, never raised."""
        if self.phase is not Phase.STARTED:
            await self._stop_task()
            return
        self.phase = Phase.STOPPING
        try:
            await asyncio.wait_for(self._exchange({"type": "lifespan.shutdown"}), timeout_s)
        except TimeoutError:
            log.warning("lifespan shutdown did not complete within %.1fs", timeout_s)
        if self.phase is Phase.FAILED:
            log.error("lifespan shutdown failed: %s", self._failure_message)
        elif self.phase is Phase.STOPPING and self._error is not None:
            log.error("exception in lifespan shutdown", exc_info=self._error)
        await self._stop_task()
        self.phase = Phase.STOPPED if self.phase is not Phase.FAILED else self.phase

    async def _exchange(self, message: dict[str, Any]) -> None:
        self._answered.clear()
        self._inbox.put_nowait(message)
        await self._answered.wait()

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": dict(SCOPE_ASGI), "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the app's failure is reported by the waiting phase
            self._error = exc
        finally:
            self._answered.set()

    # ------------------------------------------------------------ app side

    async def receive(self) -> dict[str, Any]:
        message = await self._inbox.get()
        self._received += 1
        return message

    async def send(self, message: dict[str, Any]) -> None:
        handler = _HANDLERS.get(message.get("type", ""))
        if handler is None:
            raise RuntimeError(f"unexpected ASGI message {message.get('type')!r} in lifespan")
        expected, outcome = handler
        if self.phase is not expected:
            raise RuntimeError(f"{message['type']!r} sent while lifespan is {self.phase.value}")
        self.phase = outcome
        if outcome is Phase.FAILED:
            self._failure_message = " ".join(str(message.get("message", "")).split()) or message["type"]
        self._answered.set()


# message type -> (phase it answers, phase it leads to)
_HANDLERS: dict[str, tuple[Phase, Phase]] = {
    "lifespan.startup.complete": (Phase.STARTING, Phase.STARTED),
    "lifespan.startup.failed": (Phase.STARTING, Phase.FAILED),
    "lifespan.shutdown.complete": (Phase.STOPPING, Phase.STOPPED),
    "lifespan.shutdown.failed": (Phase.STOPPING, Phase.FAILED),
}
