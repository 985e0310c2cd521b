"""The front end's Prometheus metrics: a registry of its own per front end (prometheus_client).

Nothing on the hot path touches prometheus_client: a request's end (the access
hook's ``request_ended`` / ``websocket_ended``) and its wait for a slot (the
HTTP bridge's ``queue_waited``) add to ``traffic.Traffic``'s plain numbers
(compiled with the request path), and custom collectors turn them into metric
families when scraped:
* ``_TrafficCollector``: those per-request counters and histograms;
* ``_StateCollector``: everything that is a state (workers by state,
  in-flight, capacity, queue depth, open WebSockets, worker joins/losses),
  read from the dispatcher.
The scrape runs on the event loop like the hot path, so no lock is needed.
The exposition is the one Counter/Histogram objects would give (names, HELP,
labels, ``le`` bounds, ``_created`` series).

Names follow Prometheus conventions (``_total`` counters, ``_seconds``,
``_bytes``); every one starts with ``zasgi_``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from wire.states import WorkerState

from .traffic import Buckets, Traffic

if TYPE_CHECKING:
    from .dispatch import Dispatcher

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BLOCKED_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WAIT_BUCKETS_S = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATES = (WorkerState.JOINING, WorkerState.READY, WorkerState.BUSY, WorkerState.DRAINING,
           WorkerState.LINGERING)  # fmt: skip  -- not GONE


_go_float: Callable[[float], str] = floatToGoString  # (prometheus_client's is not annotated)


def _created_series() -> bool:
    # prometheus_client.disable_created_metrics() (or PROMETHEUS_DISABLE_CREATED_SERIES) turns
    # the _created samples off for its own metrics; ours follow the same switch.
    return bool(getattr(_prometheus_metrics, "_use_created", True))


def _histogram(buckets: Buckets, name: str, documentation: str) -> HistogramMetricFamily:
    """``buckets`` as prometheus_client's Histogram would expose it (``le`` bounds, _created)."""
    cumulative, rows = 0, []
    for bound, count in zip((*buckets.bounds, float("inf")), buckets.counts, strict=True):
        cumulative += count
        rows.append((_go_float(bound), cumulative))
    family = HistogramMetricFamily(name, documentation, buckets=rows, sum_value=buckets.sum)
    if _created_series():
        family.samples.append(Sample(f"{name}_created", {}, buckets.created, None, None))
    return family


class Metrics:
    """The front end's registry; what requests add to is ``traffic`` (traffic.py)."""

    def __init__(self, dispatcher: Dispatcher, *, websockets_open: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.traffic = t = Traffic(LATENCY_BUCKETS_S, WAIT_BUCKETS_S)
        self.registry.register(_TrafficCollector(t))
        self.registry.register(_StateCollector(dispatcher, websockets_open))


class _TrafficCollector(Collector):
    """``Traffic`` as the families prometheus_client's Counter/Histogram would expose."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic

    def collect(self) -> Iterator[Any]:
        t = self._traffic
        created = _created_series()
        requests = CounterMetricFamily(
            "zasgi_http_requests", "HTTP responses sent, by status.", labels=["status"]
        )
        for status, count in list(t.by_status.items()):
            requests.add_metric([str(status)], count, t.status_created[status] if created else None)
        yield requests
        yield _histogram(
            t.latency,
            "zasgi_http_request_duration_seconds",
            "From the request's head parsed to the response's last byte written.",
        )
        since = t.created if created else None
        yield CounterMetricFamily(
            "zasgi_http_received_bytes", "HTTP request body bytes read.", value=t.bytes_in, created=since
        )
        yield CounterMetricFamily(
            "zasgi_http_sent_bytes",
            "HTTP response bytes written (head and body).",
            value=t.bytes_out,
            created=since,
        )
        yield _histogram(
            t.wait,
            "zasgi_queue_wait_seconds",
            "Time an HTTP request waited for a worker slot (503s after the queue timeout included).",
        )
        yield CounterMetricFamily(
            "zasgi_websocket_sessions", "WebSocket sessions ended.", value=t.websockets_ended, created=since
        )


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
        limits = GaugeMetricFamily(
            "zasgi_worker_limit",
            "Each worker's concurrency limit now: its capacity, or its adaptive limit (LIMIT).",
            labels=["worker"],
        )
        for w in workers:
            limits.add_metric([w.worker_id], w.limit)
        yield limits
        yield GaugeMetricFamily(
            "zasgi_websocket_connections",
            "WebSocket connections open (handshake included).",
            value=self._websockets_open(),
        )
        yield GaugeMetricFamily(
            "zasgi_lingering_streams",
            "Streams still open on lingering workers (WebSocket sessions, responses under way).",
            value=sum(w.in_flight + w.ws_in_flight for w in workers if w.state is WorkerState.LINGERING),
        )
        queue = GaugeMetricFamily("zasgi_queue_depth", "Requests waiting for a worker slot.", labels=["kind"])
        queue.add_metric(["http"], len(d.slots))
        queue.add_metric(["websocket"], len(d.ws_slots))
        yield queue
        overloaded = GaugeMetricFamily(
            "zasgi_queue_overloaded",
            "1 while the HTTP queue stands above --queue-target for --queue-interval and sheds (codel.py).",
            value=1 if d.slots.policy.mode.value == "overload" else 0,
        )
        yield overloaded
        shed = CounterMetricFamily(
            "zasgi_queue_shed",
            "Requests refused 503 without a worker, by reason: overload (waited past --queue-target in an "
            "overloaded queue), timeout (--queue-timeout), full (--queue-size), no_workers, shutdown.",
            labels=["reason", "kind"],
        )
        for kind, slots in (("http", d.slots), ("websocket", d.ws_slots)):
            for reason, count in slots.shed.items():
                shed.add_metric([reason, kind], count)
        yield shed
        yield _histogram(
            d.loop_blocked,
            "zasgi_worker_loop_blocked_seconds",
            "Stalls of workers' event loops (a synchronous call in async code), from their PULSE: each "
            "stall's length once the loop ran again, or when the worker was evicted.",
        )
        yield CounterMetricFamily(
            "zasgi_worker_joins", "Workers welcomed (a restarted worker joins again).", value=d.pool.joins
        )
        yield CounterMetricFamily(
            "zasgi_worker_losses",
            "Workers lost: BYE, silence, unreachable, protocol error.",
            value=d.pool.losses,
        )
