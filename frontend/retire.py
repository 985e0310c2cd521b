"""A front end's own lifecycle: serving, then leaving in one of two ways.

    SERVING ──retire (SIGUSR1: a successor serves the port)──> RETIRING ──> STOPPED
       │                                                          │
       │                                     SIGTERM while retiring│
       │                                                          v
       └──────shutdown (SIGTERM / SIGINT: nobody takes over)──> STOPPING ──> STOPPED

RETIRING is a front-end roll (issue 19): another front end already accepts on
the same port (an inherited copy of our listening socket, or a SO_REUSEPORT
sibling), so we stop accepting and let every connection end *cleanly*:

* in-flight requests are answered;
* a keep-alive connection's next response carries ``Connection: close``
  (closing an idle one early would race the client's next request on it, the
  failure every server shows on restarts); one that stays idle closes at the
  keep-alive timeout, as it would anyway;
* streaming responses and WebSockets go on for up to the grace period (the
  shutdown timeout); then WebSockets close with 1012 (Service Restart), so a
  client reconnects (to the successor), never with 1006;
* then BYE to the workers and exit.

STOPPING is the plain shutdown (server.py): idle keep-alive connections close
at once, WebSockets with 1001 once in-flight HTTP is done. A SIGTERM during a
retirement turns it into a shutdown for what is left.

Phases only move forward, so ``reached(phase)`` means "at ``phase`` or past
it" (as appserver/lifecycle.py).
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum

log = logging.getLogger(__name__)


class FrontendPhase(Enum):
    SERVING = 0  # accepting; the ready line was written
    RETIRING = 1  # a successor accepts on our port: we only let connections end cleanly
    STOPPING = 2  # shutting down with no successor: idle connections close now
    STOPPED = 3  # every connection closed, BYE said; about to exit


TRANSITIONS: dict[FrontendPhase, frozenset[FrontendPhase]] = {
    FrontendPhase.SERVING: frozenset({FrontendPhase.RETIRING, FrontendPhase.STOPPING, FrontendPhase.STOPPED}),
    FrontendPhase.RETIRING: frozenset({FrontendPhase.STOPPING, FrontendPhase.STOPPED}),
    FrontendPhase.STOPPING: frozenset({FrontendPhase.STOPPED}),
    FrontendPhase.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class FrontendLifecycle:
    """Current phase plus one ``asyncio.Event`` per phase, so others can await it."""

    def __init__(self, name: str = "front end") -> None:
        self.name = name
        self._phase = FrontendPhase.SERVING
        self._events = {phase: asyncio.Event() for phase in FrontendPhase}
        self._events[FrontendPhase.SERVING].set()

    @property
    def phase(self) -> FrontendPhase:
        return self._phase

    def to(self, new: FrontendPhase) -> None:
        """Move to ``new``. Raises IllegalTransition (and stays put) if the table forbids it."""
        old = self._phase
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{self.name}: cannot go from {old.name} to {new.name}")
        self._phase = new
        log.debug("%s: %s -> %s", self.name, old.name, new.name)
        for phase in FrontendPhase:
            if phase.value <= new.value:
                self._events[phase].set()

    def has_reached(self, phase: FrontendPhase) -> bool:
        return self._events[phase].is_set()

    async def reached(self, phase: FrontendPhase) -> None:
        """Return once the phase is ``phase`` or a later one."""
        await self._events[phase].wait()
