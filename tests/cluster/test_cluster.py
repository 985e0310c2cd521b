"""Many front ends x many app servers across hosts (network namespaces), run as compose runs them.

One cluster for the module: 2 front-end hosts, 3 app-server hosts, one name
(`frontend`) for both front ends. The tests run in file order and each leaves
what the next one expects (noted in its docstring); every loop is bounded.
Measured times are printed (pytest -s shows them).
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.helpers.processes import Proc

from .conftest import Cluster
from .load import Load, describe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

HEARTBEAT_S = 3.0  # front-end default: 1000 ms heartbeat x liveness 3
SLACK_S = 2.0  # a loaded 2-core machine


class LogMark:
    """Where each process's log ends now: ``wait`` looks only at what is written after."""

    def __init__(self, procs: list[Proc]) -> None:
        self.marks = {proc: len(proc.log()) for proc in procs}

    def wait(self, pattern: str, timeout_s: float) -> float:
        """Poll until every process logged ``pattern``; return the seconds it took."""
        start = time.monotonic()
        regex = re.compile(pattern)
        for proc, mark in self.marks.items():
            while not regex.search(proc.log()[mark:]):
                if time.monotonic() - start > timeout_s:
                    raise AssertionError(
                        f"{proc.name}: {pattern!r} not logged in {timeout_s}s:\n{proc.log()[mark:]}"
                    )
                time.sleep(0.05)
        return time.monotonic() - start


def test_both_front_ends_reach_every_worker(cluster: Cluster) -> None:
    """Leaves: as1-as3 serving through fe1 and fe2."""
    workers = cluster.worker_pids()
    assert len(workers) == 3, cluster.logs()
    for app in cluster.appservers.values():  # one name, two addresses: one connection each
        app.proc.wait_for(r"ready \(2 front end\(s\)\)", 5)
    urls = [cluster.url("fe1"), cluster.url("fe2")]
    with Load(urls) as load:
        every = lambda: all(load.pids(url=url) == workers for url in urls)  # noqa: E731
        took = load.wait_until(every, 30, "every worker behind each front end")
    assert not load.failures(), describe(load.failures())
    print(f"\nall 3 workers seen through both front ends after {took:.2f}s, {len(load.results)} requests")


def test_partitioned_host_is_dropped_and_rejoins(cluster: Cluster) -> None:
    """as3's link goes down: both front ends declare its worker lost by heartbeat, traffic goes on
    without a failure (in-flight GETs are replayed), and it rejoins when the link is back."""
    (victim,) = cluster.appservers["as3"].worker_pids
    others = cluster.worker_pids() - {victim}
    lost = rf"worker \S+-{victim}-[0-9a-f]+ lost"
    with Load([cluster.url("fe1"), cluster.url("fe2")]) as load:
        load.wait_until(lambda: victim in load.pids(), 15, "the victim serving first")
        mark = LogMark([cluster.frontends["fe1"], cluster.frontends["fe2"]])
        cluster.net.link("as3", up=False)
        detected = mark.wait(lost, HEARTBEAT_S + SLACK_S + 5)
        settled = time.monotonic() + 0.2
        load.wait_until(lambda: load.pids(since=settled) == others, 10, "the other workers serving")
        time.sleep(1.0)
        assert load.pids(since=settled) == others
        cluster.net.link("as3", up=True)
        up = time.monotonic()
        rejoined = load.wait_until(lambda: victim in load.pids(since=up), 30, "the victim rejoining")
    assert not load.failures(), describe(load.failures())
    assert detected <= HEARTBEAT_S + SLACK_S
    print(f"\npartition: lost after {detected:.2f}s, rejoined {rejoined:.2f}s after the link came back, "
          f"{len(load.results)} requests, 0 failed")  # fmt: skip


def test_scale_three_to_six_to_two_under_load(cluster: Cluster) -> None:
    """App-server processes 3 -> 6 (one more per host) -> 2 (SIGTERM: they drain); 0 failed requests.
    Leaves: as2 and as3b."""
    with Load([cluster.url("fe1"), cluster.url("fe2")]) as load:
        start = time.monotonic()
        cluster.start_appservers([("as1b", "as1"), ("as2b", "as2"), ("as3b", "as3")])
        six = cluster.worker_pids()
        assert len(six) == 6
        grew = load.wait_until(lambda: load.pids(since=start) == six, 30, "all six workers serving")
        leaving = [cluster.remove_appserver(name) for name in ("as1", "as1b", "as2b", "as3")]
        stopping = time.monotonic()
        for app in leaving:
            app.proc.signal(signal.SIGTERM)
        for app in leaving:
            assert app.proc.wait_exit(45) == 0, app.proc.log()[-3000:]
        drained = time.monotonic() - stopping
        two = cluster.worker_pids()
        assert len(two) == 2
        after = time.monotonic()
        shrank = load.wait_until(lambda: load.pids(since=after) == two, 15, "the two left serving")
        time.sleep(0.5)
        assert load.pids(since=after) == two
    assert not load.failures(), describe(load.failures())
    print(f"\nscale: 6 serving {grew:.2f}s after start, 4 drained and exited in {drained:.2f}s, "
          f"2 serving {shrank:.2f}s later, "
          f"{len(load.results)} requests, 0 failed")  # fmt: skip


def test_front_end_lost_forgotten_and_replaced(cluster: Cluster) -> None:
    """fe1 is killed: fe2 keeps serving with every worker. fe1 leaves the name: the workers forget
    it. A new fe1 appears under the name: the workers join it and it serves."""
    workers = cluster.worker_pids()
    fe1_backend = re.escape(cluster.backend("fe1"))
    with Load([cluster.url("fe2")]) as load:
        load.wait_until(lambda: load.pids() == workers, 15, "fe2 serving every worker")
        apps = [app.proc for app in cluster.appservers.values()]
        mark = LogMark(apps)
        cluster.frontends["fe1"].signal(signal.SIGKILL)
        cluster.frontends["fe1"].wait_exit(10)
        killed = time.monotonic()
        mark.wait(rf"front end {fe1_backend} (lost|dropped)", HEARTBEAT_S + SLACK_S + 5)  # they serve on
        load.wait_until(lambda: load.pids(since=killed) == workers, 15, "fe2 serving every worker")
        mark = LogMark(apps)
        cluster.resolve_frontend_to(["fe2"])
        forgot = mark.wait(rf"front end {fe1_backend} forgotten", 15)
    assert not load.failures(), describe(load.failures())
    cluster.start_frontends(["fe1"])
    mark = LogMark(apps)
    cluster.resolve_frontend_to(["fe1", "fe2"])
    joined = mark.wait(rf"front end {fe1_backend} appeared", 15)
    with Load([cluster.url("fe1"), cluster.url("fe2")]) as load:
        served = load.wait_until(
            lambda: load.pids(url=cluster.url("fe1")) == workers, 20, "the new fe1 serving every worker"
        )
    assert not load.failures(), describe(load.failures())
    print(f"\nfront end: forgotten within {forgot:.2f}s of leaving the name, joined within {joined:.2f}s, "
          f"serving {served:.2f}s later")  # fmt: skip
