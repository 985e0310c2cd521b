"""fleet_admin.py's pure parts: every front end's families under one name each, labelled by front end,
through the exposition a peer sends (OpenMetrics) and back out in either format."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_families
from prometheus_client.registry import Collector

from frontend.fleet_admin import labelled, merged, read_peers


def _front_end(requests: int, queued: int) -> list:  # type: ignore[type-arg]
    """One front end's families as a peer's /metrics gives them (parsed from OpenMetrics)."""
    registry = CollectorRegistry()
    Counter("zasgi_http_requests", "HTTP responses sent, by status.", ["status"], registry=registry).labels(
        "200"
    ).inc(requests)
    Histogram("zasgi_queue_wait_seconds", "Wait.", buckets=(0.1, 1.0), registry=registry).observe(0.5)
    Gauge("zasgi_queue_depth", "Waiting.", ["kind"], registry=registry).labels("http").set(queued)
    return list(text_string_to_metric_families(openmetrics.generate_latest(registry).decode()))


class _Fixed(Collector):
    def __init__(self, families: list) -> None:  # type: ignore[type-arg]
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        return iter(self.families)


def _exposed(families: list, encoder=generate_latest) -> str:  # type: ignore[no-untyped-def,type-arg]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return encoder(registry).decode()  # type: ignore[no-any-return]


def test_each_front_ends_samples_are_labelled_and_kept_apart() -> None:
    fleet = merged([labelled(_front_end(7, 1), "fe0"), labelled(_front_end(5, 0), "fe1")])
    assert [f.name for f in fleet] == ["zasgi_http_requests", "zasgi_queue_wait_seconds", "zasgi_queue_depth"]
    parsed = {f.name: f for f in text_families(_exposed(fleet))}
    requests = {s.labels["frontend"]: s.value for s in parsed["zasgi_http_requests"].samples
                if s.name == "zasgi_http_requests_total"}  # fmt: skip
    assert requests == {"fe0": 7.0, "fe1": 5.0}
    depth = {(s.labels["frontend"], s.labels["kind"]): s.value for s in parsed["zasgi_queue_depth"].samples}
    assert depth == {("fe0", "http"): 1.0, ("fe1", "http"): 0.0}
    buckets = [s for s in parsed["zasgi_queue_wait_seconds"].samples if s.name.endswith("_bucket")]
    assert len(buckets) == 6 and {s.labels["frontend"] for s in buckets} == {"fe0", "fe1"}


def test_the_openmetrics_answer_keeps_created_with_its_family_and_parses_again() -> None:
    fleet = merged([labelled(_front_end(3, 0), "fe0"), labelled(_front_end(4, 2), "fe1")])
    text = _exposed(fleet, openmetrics.generate_latest)
    assert text.endswith("# EOF\n")
    again = {f.name: f for f in text_string_to_metric_families(text)}  # strict: one family per name
    created = [s for s in again["zasgi_http_requests"].samples if s.name == "zasgi_http_requests_created"]
    assert {s.labels["frontend"] for s in created} == {"fe0", "fe1"}


def test_labelling_leaves_the_original_untouched() -> None:
    families = _front_end(1, 0)
    labelled(families, "fe9")
    assert all("frontend" not in s.labels for f in families for s in f.samples)


def test_a_family_of_another_type_under_the_same_name_is_not_mixed_in() -> None:
    gauge = labelled(_front_end(1, 0), "fe0")
    counter = [f for f in labelled(_front_end(2, 0), "fe1") if f.name == "zasgi_http_requests"]
    counter[0].type = "gauge"  # (a front end of other code, mid-upgrade)
    fleet = merged([gauge, counter])
    requests = next(f for f in fleet if f.name == "zasgi_http_requests")
    assert requests.type == "counter" and {s.labels["frontend"] for s in requests.samples} == {"fe0"}


def test_peers_are_the_listed_urls_but_our_own(tmp_path: Path) -> None:
    path = tmp_path / "run-1.frontends.admin"
    path.write_text("http://127.0.0.1:4001\n\nhttp://127.0.0.1:4002\n")
    assert read_peers(str(path), "http://127.0.0.1:4002") == ["http://127.0.0.1:4001"]
    assert read_peers(str(tmp_path / "gone"), None) == []
