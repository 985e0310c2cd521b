"""``--limit-concurrency``: how many connections are admitted; past it, each is answered 503.

Shared by the connections of a listener (connection.py) and, for a
WebSocket upgrade, by aiohttp's handler the transport moves to (upgrade.py):
the slot goes with the transport.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Gate:
    """Connections admitted under ``--limit-concurrency`` (None: no limit)."""

    limit: int | None
    open: int = 0
    refused: int = 0  # since the last log line: a flood of connections logs once a second
    _logged_at: float = 0.0

    def admit(self) -> bool:
        if self.limit is not None and self.open >= self.limit:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged_at >= 1.0:
                log.warning(
                    "over --limit-concurrency %d: %d connection(s) answered 503", self.limit, self.refused
                )
                self._logged_at, self.refused = now, 0
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
