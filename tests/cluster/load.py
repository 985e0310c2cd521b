"""Steady HTTP load from the test process: a few client threads, every request recorded.

Threads, not asyncio: the test body blocks (process waits, log polling) while
the load runs. Each request is a GET of the probe's scope route, which answers
with the worker's pid, so a result says which worker served it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

REQUEST_TIMEOUT_S = 20.0  # longer than any loss detection + replay; a hang shows as a failure


@dataclass(frozen=True)
class Result:
    url: str
    started: float  # time.monotonic()
    ended: float
    status: int | None
    pid: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.pid is not None


class Load:
    """``with Load(urls) as load: ...``: ``clients`` threads cycling over ``urls`` until exit."""

    def __init__(self, urls: Sequence[str], *, clients: int = 4, pause_s: float = 0.01) -> None:
        self.urls = list(urls)
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pause_s = pause_s
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)

    def _client(self, index: int) -> None:
        n = index
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while not self._stop.is_set():
                url = self.urls[n % len(self.urls)]
                n += 1
                self._record(client, url)
                time.sleep(self._pause_s)

    def _record(self, client: httpx.Client, url: str) -> None:
        started = time.monotonic()
        try:
            response = client.get(f"{url}/")
            pid = response.json().get("pid") if response.status_code == 200 else None
            result = Result(url, started, time.monotonic(), response.status_code, pid)
        except Exception as exc:  # any failure is a result to report, never a dead thread
            result = Result(url, started, time.monotonic(), None, None, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self.results.append(result)

    # ------------------------------------------------------------ reading

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)

    def failures(self) -> list[Result]:
        return [r for r in self.snapshot() if not r.ok]

    def pids(self, *, since: float = 0.0, url: str | None = None) -> set[int]:
        """Workers that served requests started at or after ``since`` (through ``url``)."""
        return {
            r.pid for r in self.snapshot()
            if r.ok and r.pid is not None and r.started >= since and (url is None or r.url == url)
        }  # fmt: skip

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll ``predicate`` (every 50 ms); return the seconds it took; fail after ``timeout_s``."""
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout_s:
                raise AssertionError(f"{what}: not within {timeout_s}s; failures: {self.failures()[:5]}")
            time.sleep(0.05)
        return time.monotonic() - start


def describe(failures: list[Result]) -> str:
    return "\n".join(f"{r.url} after {r.ended - r.started:.2f}s: {r.status} {r.error}" for r in failures[:10])
