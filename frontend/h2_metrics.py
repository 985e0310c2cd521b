"""HTTP/2's own numbers for /metrics: connections, streams, and connections cut by GOAWAY code.

Plain ints on the hot path (as metrics.py's ``Traffic``), turned into metric
families when scraped by a collector registered on the front end's registry.
Requests served over HTTP/2 are also in the shared request counters
(``zasgi_http_requests_total`` and the rest), as any request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class H2Counts(Collector):
    def __init__(self) -> None:
        self.created = time.time()
        self.connections_open = 0
        self.connections = 0
        self.streams = 0
        self.goaway: dict[str, int] = {}  # GOAWAY code name -> connections we cut with it

    def cut(self, code: str) -> None:
        self.goaway[code] = self.goaway.get(code, 0) + 1

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "zasgi_http2_connections_open", "Open HTTP/2 connections.", value=self.connections_open
        )
        yield CounterMetricFamily(
            "zasgi_http2_connections",
            "HTTP/2 connections accepted.",
            value=self.connections,
            created=self.created,
        )
        yield CounterMetricFamily(
            "zasgi_http2_streams",
            "HTTP/2 streams opened by clients.",
            value=self.streams,
            created=self.created,
        )
        cut = CounterMetricFamily(
            "zasgi_http2_goaway",
            "HTTP/2 connections the front end cut, by GOAWAY error code.",
            labels=["code"],
        )
        for code, n in sorted(self.goaway.items()):
            cut.add_metric([code], n, created=self.created)
        yield cut
