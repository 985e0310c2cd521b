"""The front end's Prometheus metrics: a registry of its own per front end (prometheus_client).

Two kinds, by cost:
* per-request counters and histograms, moved on the hot path by the access
  hook (``request_ended``, ``websocket_ended``) and by the HTTP bridge
  (``queue_waited``): prometheus_client's children, looked up once per status;
* everything that is a state (workers by state, in-flight, capacity, queue
  depth, open WebSockets, worker joins/losses) is read from the dispatcher
  when scraped (``_StateCollector``), so it costs nothing between scrapes.

Names follow Prometheus conventions (``_total`` counters, ``_seconds``,
``_bytes``); every one starts with ``zasgi_``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wire.states import WorkerState

if TYPE_CHECKING:
    from .dispatch import Dispatcher

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS_S = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATES = (WorkerState.JOINING, WorkerState.READY, WorkerState.DRAINING)  # GONE ones are not in the pool


class Metrics:
    def __init__(self, dispatcher: Dispatcher, *, websockets_open: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._requests = Counter(
            "zasgi_http_requests", "HTTP responses sent, by status.", ["status"], registry=r
        )
        self._by_status: dict[int, Any] = {}
        self._latency = Histogram(
            "zasgi_http_request_duration_seconds",
            "From the request's head parsed to the response's last byte written.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._bytes_in = Counter("zasgi_http_received_bytes", "HTTP request body bytes read.", registry=r)
        self._bytes_out = Counter(
            "zasgi_http_sent_bytes", "HTTP response bytes written (head and body).", registry=r
        )
        self._wait = Histogram(
            "zasgi_queue_wait_seconds",
            "Time an HTTP request waited for a worker slot (503s after the queue timeout included).",
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self._ws_ended = Counter("zasgi_websocket_sessions", "WebSocket sessions ended.", registry=r)
        r.register(_StateCollector(dispatcher, websockets_open))

    def request_ended(self, status: int, duration_s: float, bytes_in: int, bytes_out: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(str(status))
        child.inc()
        self._latency.observe(duration_s)
        if bytes_in:
            self._bytes_in.inc(bytes_in)
        self._bytes_out.inc(bytes_out)

    def websocket_ended(self) -> None:
        self._ws_ended.inc()

    def queue_waited(self, seconds: float) -> None:
        self._wait.observe(seconds)


class _StateCollector(Collector):
    """Gauges and counters read from the dispatcher at scrape time."""

    def __init__(self, dispatcher: Dispatcher, websockets_open: Callable[[], int]) -> None:
        self._dispatcher = dispatcher
        self._websockets_open = websockets_open

    def collect(self) -> Iterator[Any]:
        d = self._dispatcher
        workers = list(d.pool)
        by_state = GaugeMetricFamily("zasgi_workers", "Connected workers by state.", labels=["state"])
        for state in _STATES:
            by_state.add_metric([state.value], sum(1 for w in workers if w.state is state))
        yield by_state
        ready = [w for w in workers if w.state is WorkerState.READY]
        yield GaugeMetricFamily(
            "zasgi_http_requests_in_flight",
            "HTTP streams holding a worker slot.",
            value=sum(w.in_flight for w in workers),
        )
        yield GaugeMetricFamily(
            "zasgi_http_capacity", "HTTP slots of the ready workers.", value=sum(w.capacity for w in ready)
        )
        yield GaugeMetricFamily(
            "zasgi_websocket_connections",
            "WebSocket connections open (handshake included).",
            value=self._websockets_open(),
        )
        queue = GaugeMetricFamily("zasgi_queue_depth", "Requests waiting for a worker slot.", labels=["kind"])
        queue.add_metric(["http"], len(d.slots))
        queue.add_metric(["websocket"], len(d.ws_slots))
        yield queue
        yield CounterMetricFamily(
            "zasgi_worker_joins", "Workers welcomed (a restarted worker joins again).", value=d.pool.joins
        )
        yield CounterMetricFamily(
            "zasgi_worker_losses",
            "Workers lost: BYE, silence, unreachable, protocol error.",
            value=d.pool.losses,
        )
