"""The worker's own lifecycle: one state, a transition table, one Event per state.

    STARTING ──> READY ──> DRAINING ──> STOPPED
        │          │          │           ^
        │          │          └──> LINGERING   (replaced by a new worker: only
        │          │                     │      WebSocket sessions and started
        │          │                     │      responses left; served until they
        │          │                     │      end or the stream drain limit)
        ├──────────┴─────────────────────┴──> STOPPED   (failure: straight to STOPPED)
        └──> DRAINING                          (stop requested before ready)

Phases only move forward, so ``reached(state)`` means "is at ``state`` or
past it": a waiter for READY is released when a worker that never got ready
stops, instead of hanging. That replaces polling loops (uvicorn's
``should_exit`` checks) with ``await lifecycle.reached(...)``, which is also
the in-process readiness hook for tests.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum

log = logging.getLogger(__name__)


class WorkerPhase(Enum):
    STARTING = 0  # app importing, lifespan startup, handshakes under way
    READY = 1  # every front end has welcomed us; taking streams
    DRAINING = 2  # DRAIN sent; finishing in-flight streams, taking no new ones
    LINGERING = 3  # LINGER sent; serving only WebSocket sessions and responses already started
    STOPPED = 4  # lifespan shut down, BYE sent; about to exit


TRANSITIONS: dict[WorkerPhase, frozenset[WorkerPhase]] = {
    WorkerPhase.STARTING: frozenset({WorkerPhase.READY, WorkerPhase.DRAINING, WorkerPhase.STOPPED}),
    WorkerPhase.READY: frozenset({WorkerPhase.DRAINING, WorkerPhase.STOPPED}),
    WorkerPhase.DRAINING: frozenset({WorkerPhase.LINGERING, WorkerPhase.STOPPED}),
    WorkerPhase.LINGERING: frozenset({WorkerPhase.STOPPED}),
    WorkerPhase.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class Lifecycle:
    """Current phase plus one ``asyncio.Event`` per phase, so others can await it."""

    def __init__(self, name: str = "worker") -> None:
        self.name = name
        self._phase = WorkerPhase.STARTING
        self._events = {phase: asyncio.Event() for phase in WorkerPhase}
        self._events[WorkerPhase.STARTING].set()

    @property
    def phase(self) -> WorkerPhase:
        return self._phase

    def to(self, new: WorkerPhase) -> None:
        """Move to ``new``. Raises IllegalTransition (and stays put) if the table forbids it."""
        old = self._phase
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{self.name}: cannot go from {old.name} to {new.name}")
        self._phase = new
        log.debug("%s: %s -> %s", self.name, old.name, new.name)
        for phase in WorkerPhase:
            if phase.value <= new.value:
                self._events[phase].set()

    def has_reached(self, state: WorkerPhase) -> bool:
        return self._events[state].is_set()

    async def reached(self, state: WorkerPhase) -> None:
        """Return once the phase is ``state`` or a later one."""
        await self._events[state].wait()
