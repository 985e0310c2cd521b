"""Clients that keep requesting while a test changes the server under them (a front end retiring,
a roll): threads of GET loops, each over keep-alive connections or a new connection a request,
counting answers. Every loop ends on ``stop()``, or at its own deadline and request count.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterable
from types import TracebackType


class GetLoad:
    """``with GetLoad(port, [True, False, ...]) as load:`` one thread per flag (True: keep-alive);
    ``load.ok`` / ``load.failed`` count 200s and everything else, ``load.errors`` says why."""

    def __init__(
        self, port: int, keep_alive: Iterable[bool], *, path: str = "/", max_s: float = 300.0,
        max_requests: int = 200_000,
    ) -> None:  # fmt: skip
        self.port = port
        self.path = path
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_s
        self._max_requests = max_requests
        self._threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in keep_alive]

    def __enter__(self) -> GetLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def counts(self) -> dict[str, int]:
        return {"ok": self.ok, "failed": self.failed}

    def _client(self, keep_alive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        headers = {} if keep_alive else {"Connection": "close"}
        for _ in range(self._max_requests):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", self.path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
                if resp.will_close or not keep_alive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                ok = False
                with self._lock:
                    self.errors.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                if ok:
                    self.ok += 1
                else:
                    self.failed += 1
        if conn is not None:
            conn.close()
