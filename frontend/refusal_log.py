"""How the 503s for want of a worker slot reach the log.

A line per refusal was a log storm exactly when the front end has the least
CPU to spare: under bench.py's cpu-overload, ~800 lines a second at the
default ``--log-level info``, each costing the front end about what the
refusal itself does (2026-12-07, three interleaved pairs of 10 s: the front
end 13-14% of a core -> 11%, goodput 872-887 -> 893-899 2xx/s). The access
log (when on) still has every request, and the metrics count every refusal
by reason (``zasgi_queue_shed``); this log says that refusing started, and
how many followed:

| state | a refusal                                   | becomes |
|-------|---------------------------------------------|---------|
| QUIET | is logged in full; an interval starts       | COUNTING |
| COUNTING, in the interval | is counted by reason  | COUNTING |
| COUNTING, at the interval's end (``report``) | - | QUIET if none was counted, else COUNTING anew with the counts logged as one line |

``RefusalLog`` is that table, pure (times are passed in); ``RefusalReporter``
runs it on the loop (one timer per interval, none while quiet; nothing at
all while INFO is off).
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum

REPORT_INTERVAL_S = 10.0


class RefusalLogState(Enum):
    QUIET = "quiet"
    COUNTING = "counting"


TRANSITIONS: dict[RefusalLogState, frozenset[RefusalLogState]] = {
    RefusalLogState.QUIET: frozenset({RefusalLogState.COUNTING}),
    RefusalLogState.COUNTING: frozenset({RefusalLogState.QUIET, RefusalLogState.COUNTING}),
}


class RefusalLog:
    def __init__(self, interval_s: float = REPORT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.state = RefusalLogState.QUIET
        self.due_at = 0.0  # when ``report`` is due (COUNTING)
        self._counts: dict[str, int] = {}

    def refused(self, now: float, reason: str) -> bool:
        """Take one refusal; True when it is to be logged in full (the first after a quiet spell).
        A True also means a report is now due at ``due_at``: the owner sets its timer."""
        if self.state is RefusalLogState.QUIET:
            self._move(RefusalLogState.COUNTING)
            self.due_at = now + self.interval_s
            return True
        self._counts[reason] = self._counts.get(reason, 0) + 1
        return False

    def report(self, now: float) -> str | None:
        """At ``due_at``: the line for the refusals counted since (None if there were none, and the
        log is quiet again). After a line, the next report is due one interval on."""
        counts, self._counts = self._counts, {}
        if not counts:
            self._move(RefusalLogState.QUIET)
            return None
        self._move(RefusalLogState.COUNTING)
        self.due_at = now + self.interval_s
        by_reason = ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts.items()))
        return f"{sum(counts.values()):,} more requests refused with 503 in the last {self.interval_s:g}s ({by_reason})"

    def _move(self, to: RefusalLogState) -> None:
        if to not in TRANSITIONS[self.state]:  # pragma: no cover - a bug of ours
            raise RuntimeError(f"refusal log: {self.state.value} -> {to.value}")
        self.state = to


class RefusalReporter:
    """A ``RefusalLog`` on the running loop, its count lines to ``logger`` at INFO."""

    def __init__(self, logger: logging.Logger, interval_s: float = REPORT_INTERVAL_S) -> None:
        self._logger = logger
        self._log = RefusalLog(interval_s)
        # what the first refusal's line ends with, said once here for every caller
        self.note = f"the refusals that follow are counted: a line every {interval_s:g}s"

    def refused(self, reason: str) -> bool:
        """Take one refusal; True when the caller is to log it in full."""
        if not self._logger.isEnabledFor(logging.INFO):
            return False
        loop = asyncio.get_running_loop()
        if not self._log.refused(loop.time(), reason):
            return False
        loop.call_at(self._log.due_at, self._report, loop)
        return True

    def _report(self, loop: asyncio.AbstractEventLoop) -> None:
        line = self._log.report(loop.time())
        if line is not None:
            self._logger.info("%s", line)
            loop.call_at(self._log.due_at, self._report, loop)
