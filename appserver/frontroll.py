"""The lifecycle of a front-end roll (``zasgi run``, fleet.py): one slot's new front end, and
the states of the front-end processes themselves. Pure: no processes, no clock.

    STARTING ──ready line──> JOINING ──every serving worker READY on it──> DONE
        │                       │
        └──exit / timeout───────┴──> FAILED

A roll in DONE has sent the old front end of its slot SIGUSR1 (it is RETIRING
now, frontend/retire.py); one in FAILED had its new front end killed and
unlisted. A ``restart`` roll replaces a front end that exited by itself:
nothing to retire, and a failure is retried (fleet.py) instead of stopping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class RollPhase(Enum):
    STARTING = "starting"  # the new front end is spawned; waiting for its ready line
    JOINING = "joining"  # listed for the workers; waiting until every serving worker is READY on it
    DONE = "done"  # it serves; the old one retires
    FAILED = "failed"  # it exited or timed out: killed, unlisted; the roll stops


ROLL_TRANSITIONS: dict[RollPhase, frozenset[RollPhase]] = {
    RollPhase.STARTING: frozenset({RollPhase.JOINING, RollPhase.FAILED}),
    RollPhase.JOINING: frozenset({RollPhase.DONE, RollPhase.FAILED}),
    RollPhase.DONE: frozenset(),
    RollPhase.FAILED: frozenset(),
}


class FeState(Enum):
    """A front-end process as the supervisor sees it (until it exits and is forgotten)."""

    STARTING = "starting"  # spawned; not yet ready, or not yet joined by every worker
    SERVING = "serving"
    RETIRING = "retiring"  # sent SIGUSR1: drains by itself, supervised until it exits


FE_TRANSITIONS: dict[FeState, frozenset[FeState]] = {
    FeState.STARTING: frozenset({FeState.SERVING}),
    FeState.SERVING: frozenset({FeState.RETIRING}),
    FeState.RETIRING: frozenset(),
}


@dataclass(eq=False)
class Roll:
    """One slot being replaced (see the module's diagram)."""

    slot: int
    new: Any  # fleet.FrontendProc
    restart: bool = False  # its slot's front end exited (no old one to retire)
    phase: RollPhase = RollPhase.STARTING

    def to(self, new: RollPhase) -> None:
        if new not in ROLL_TRANSITIONS[self.phase]:
            raise ValueError(f"front-end roll of slot {self.slot}: {self.phase.value} -> {new.value}")
        self.phase = new
