"""Front-end discovery: the pure decisions, FrontendSet with fake connections, a worker on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from appserver import discovery
from appserver.config import WorkerConfig
from appserver.discovery import (
    FrontendSet,
    Plan,
    Target,
    parse_endpoint,
    pick_addresses,
    plan,
    read_list,
    tcp_endpoint,
    write_list,
)  # fmt: skip
from appserver.lifecycle import WorkerPhase
from appserver.worker import EXIT_OK, Worker
from tests.helpers.processes import free_tcp_port
from wire import events as ev

from .helpers import until
from .scripted import ScriptedFrontend

V4, V6 = socket.AF_INET, socket.AF_INET6


def info(family: int, address: str, port: int = 7000) -> tuple[Any, ...]:
    sockaddr = (address, port) if family == V4 else (address, port, 0, 0)
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)


# ---------------------------------------------------------------- pure part


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("ipc:///run/zasgi/fe.sock", Target("ipc:///run/zasgi/fe.sock")),
        ("tcp://10.0.0.5:7000", Target("tcp://10.0.0.5:7000")),
        ("tcp://[fd00::5]:7000", Target("tcp://[fd00::5]:7000")),
        ("tcp://eth0;10.0.0.5:7000", Target("tcp://eth0;10.0.0.5:7000")),
        ("tcp://frontend:7000", Target("tcp://frontend:7000", "frontend", 7000)),
        ("tcp://fe.zasgi.svc.cluster.local:7000", Target("tcp://fe.zasgi.svc.cluster.local:7000",
                                                         "fe.zasgi.svc.cluster.local", 7000)),
    ],
)  # fmt: skip
def test_parse_endpoint(endpoint: str, target: Target) -> None:
    assert parse_endpoint(endpoint) == target


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        ("frontend:7000", "not a ZeroMQ endpoint"),
        ("tcp://frontend", "host:port"),
        ("tcp://frontend:0", "1-65535"),
        ("tcp://frontend:70000", "1-65535"),
        ("tcp://:7000", "host:port"),
        ("tcp://*:7000", "for binding"),
    ],
)
def test_parse_endpoint_rejects_with_one_line(endpoint: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        parse_endpoint(endpoint)
    assert "\n" not in str(caught.value)


def test_bad_connect_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="^connect: 'tcp://frontend': a tcp:// endpoint needs host:port"):
        WorkerConfig(app="m:app", connect=("tcp://frontend",))
    with pytest.raises(ValueError, match="resolve_interval_s"):
        WorkerConfig(app="m:app", connect=("tcp://frontend:7000",), resolve_interval_s=0)


def test_tcp_endpoint_brackets_ipv6() -> None:
    assert tcp_endpoint("10.0.0.5", 7000) == "tcp://10.0.0.5:7000"
    assert tcp_endpoint("fd00::5", 7000) == "tcp://[fd00::5]:7000"


def test_pick_addresses_one_family_ipv4_first_distinct_sorted() -> None:
    both = [info(V6, "::1"), info(V4, "10.0.0.9"), info(V4, "10.0.0.2"), info(V4, "10.0.0.9")]
    assert pick_addresses(both) == ["10.0.0.2", "10.0.0.9"]  # a dual-stack front end is joined once
    assert pick_addresses([info(V6, "fd00::2"), info(V6, "fd00::1")]) == ["fd00::1", "fd00::2"]
    assert pick_addresses([]) == []


def test_plan_adds_retires_and_waits_for_a_retiring_address() -> None:
    assert plan({"a", "b"}, set(), {"b", "c"}) == Plan(add=("c",), retire=("a",))
    assert plan({"b"}, {"a"}, {"a", "b"}) == Plan()  # "a" comes back once its old connection closed
    assert plan(set(), set(), set()) == Plan()


endpoint_sets = st.frozensets(st.sampled_from("abcdefgh"))


@given(active=endpoint_sets, retiring=endpoint_sets, wanted=endpoint_sets)
def test_plan_properties(active: frozenset[str], retiring: frozenset[str], wanted: frozenset[str]) -> None:
    retiring = retiring - active  # an endpoint is either active or retiring
    change = plan(active, retiring, wanted)
    after = (active - set(change.retire)) | set(change.add)
    assert not set(change.add) & (active | retiring)  # never two connections to one front end
    assert after == wanted - (retiring - active)  # everything wanted, but what still retires
    assert list(change.add) == sorted(change.add) and list(change.retire) == sorted(change.retire)


async def test_resolve_keeps_the_previous_answer_when_a_name_fails() -> None:
    name, static = Target("tcp://fe:7000", "fe", 7000), Target("ipc:///x")
    answers: dict[str, Any] = {"fe": [info(V4, "10.0.0.1"), info(V4, "10.0.0.2")]}

    async def getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer

    resolved, failed = await discovery.resolve([name, static], {}, getaddrinfo)
    assert resolved == {name: ("tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000"), static: ("ipc:///x",)}
    assert failed == {}
    answers["fe"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    again, failed = await discovery.resolve([name, static], resolved, getaddrinfo)
    assert again == resolved and failed == {name: "Temporary failure in name resolution"}
    answers["fe"] = []
    _, failed = await discovery.resolve([name], {}, getaddrinfo)
    assert failed == {name: "no IPv4 or IPv6 address"}


# ---------------------------------------------------------------- FrontendSet, fake connections


class FakeConnection:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.welcomed = asyncio.Event()
        self.refused = asyncio.Event()
        self.calls: list[str] = []
        self.streams_done = asyncio.Event()
        self.streams_done.set()

    def start(self) -> None:
        self.calls.append("start")

    def drain(self) -> None:
        self.calls.append("drain")

    async def finish_streams(self, timeout_s: float) -> None:
        await self.streams_done.wait()
        self.calls.append("finish")

    def close(self, reason: str = "") -> None:
        self.calls.append("close")


class Dns:
    """A name -> addresses table standing in for getaddrinfo."""

    def __init__(self, **names: list[str]) -> None:
        self.names: dict[str, list[str] | Exception] = dict(names)
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        self.lookups += 1
        answer = self.names[host]
        if isinstance(answer, Exception):
            raise answer
        return [info(V6 if ":" in a else V4, a, port) for a in answer]


class Harness:
    def __init__(self, endpoints: list[str], dns: Dns, interval_s: float = 3600) -> None:
        self.made: dict[str, FakeConnection] = {}
        self.set = FrontendSet(endpoints, connect=self._make, interval_s=interval_s, retire_timeout_s=5,
                               getaddrinfo=dns)  # fmt: skip

    def _make(self, endpoint: str) -> FakeConnection:
        self.made[endpoint] = FakeConnection(endpoint)
        return self.made[endpoint]

    @property
    def endpoints(self) -> list[str]:
        return [c.endpoint for c in self.set.connections]


async def test_one_connection_per_address_and_static_endpoints_as_given() -> None:
    h = Harness(["tcp://fe:7000", "ipc:///run/fe.sock", "tcp://fe:7000"], Dns(fe=["10.0.0.2", "10.0.0.1"]))
    change = await h.set.refresh()
    assert change.add == ("ipc:///run/fe.sock", "tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000")
    assert sorted(h.endpoints) == list(change.add)
    assert all(c.calls == ["start"] for c in h.made.values())


async def test_ready_waits_for_every_first_front_end() -> None:
    h = Harness(["tcp://fe:7000"], Dns(fe=["10.0.0.1", "10.0.0.2"]))
    await h.set.refresh()
    ready = asyncio.ensure_future(h.set.ready())
    h.made["tcp://10.0.0.1:7000"].welcomed.set()
    await asyncio.sleep(0.01)
    assert not ready.done()
    h.made["tcp://10.0.0.2:7000"].welcomed.set()
    await asyncio.wait_for(ready, 1)


async def test_ready_forgets_a_first_front_end_that_vanished_unwelcomed() -> None:
    dns = Dns(fe=["10.0.0.1", "10.0.0.2"])
    h = Harness(["tcp://fe:7000"], dns)
    await h.set.refresh()
    ready = asyncio.ensure_future(h.set.ready())
    h.made["tcp://10.0.0.1:7000"].welcomed.set()
    dns.names["fe"] = ["10.0.0.1"]
    await h.set.refresh()
    await asyncio.wait_for(ready, 1)


async def test_unresolvable_at_start_is_retried_and_ready_follows() -> None:
    dns = Dns(fe=socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    h = Harness(["tcp://fe:7000"], dns, interval_s=0.01)
    h.set.start()
    try:
        ready = asyncio.ensure_future(h.set.ready())
        await until(lambda: dns.lookups >= 2, 5)
        assert not ready.done() and h.endpoints == []
        dns.names["fe"] = ["10.0.0.1"]
        await until(lambda: "tcp://10.0.0.1:7000" in h.made, 5)
        h.made["tcp://10.0.0.1:7000"].welcomed.set()
        await asyncio.wait_for(ready, 5)
    finally:
        h.set.stop()


async def test_vanished_front_end_drains_then_closes_and_comes_back_only_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "appserver.discovery")
    dns = Dns(fe=["10.0.0.1", "10.0.0.2"])
    h = Harness(["tcp://fe:7000"], dns)
    await h.set.refresh()
    old = h.made["tcp://10.0.0.2:7000"]
    old.streams_done.clear()  # an in-flight request on it
    dns.names["fe"] = ["10.0.0.1"]
    assert await h.set.refresh() == Plan(retire=("tcp://10.0.0.2:7000",))
    await asyncio.sleep(0.01)
    assert old.calls == ["start", "drain"] and old in h.set.connections  # still draining: kept
    dns.names["fe"] = ["10.0.0.1", "10.0.0.2"]
    assert await h.set.refresh() == Plan()  # not twice at once
    old.streams_done.set()
    await until(lambda: old not in h.set.connections, 5)
    assert old.calls == ["start", "drain", "finish", "close"]
    assert await h.set.refresh() == Plan(add=("tcp://10.0.0.2:7000",))
    assert h.made["tcp://10.0.0.2:7000"] is not old
    assert "front end tcp://10.0.0.2:7000 no longer resolves; draining its connection" in caplog.messages


async def test_dns_failure_keeps_front_ends_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    dns = Dns(fe=["10.0.0.1"])
    h = Harness(["tcp://fe:7000"], dns)
    await h.set.refresh()
    dns.names["fe"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    for _ in range(3):
        assert await h.set.refresh() == Plan()
    assert h.endpoints == ["tcp://10.0.0.1:7000"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cannot resolve front ends tcp://fe:7000: Temporary failure in name resolution; "
        "keeping 1 known address(es)"
    ]


async def test_a_refusal_from_any_front_end_is_reported() -> None:
    dns = Dns(fe=["10.0.0.1"])
    h = Harness(["tcp://fe:7000"], dns)
    await h.set.refresh()
    dns.names["fe"] = ["10.0.0.1", "10.0.0.3"]
    await h.set.refresh()  # joined later: watched too
    h.made["tcp://10.0.0.3:7000"].refused.set()
    await asyncio.wait_for(h.set.refused.wait(), 1)
    h.set.stop()


async def test_stop_leaves_retiring_connections_to_the_worker() -> None:
    dns = Dns(fe=["10.0.0.1", "10.0.0.2"])
    h = Harness(["tcp://fe:7000"], dns)
    await h.set.refresh()
    retiring = h.made["tcp://10.0.0.2:7000"]
    retiring.streams_done.clear()
    dns.names["fe"] = ["10.0.0.1"]
    await h.set.refresh()
    await asyncio.sleep(0.01)
    h.set.stop()
    retiring.streams_done.set()
    await asyncio.sleep(0.01)
    assert retiring in h.set.connections and "close" not in retiring.calls  # the worker closes it


async def test_static_endpoints_are_resolved_once() -> None:
    dns = Dns()
    h = Harness(["ipc:///run/fe.sock"], dns, interval_s=0.01)
    h.set.start()
    await until(lambda: h.endpoints == ["ipc:///run/fe.sock"], 5)
    await asyncio.sleep(0.05)
    assert dns.lookups == 0 and h.set._runner is not None and h.set._runner.done()
    h.set.stop()


# ---------------------------------------------------------------- a worker, loopback front ends

APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"ok"})
"""


@pytest.fixture
def app_module(tmp_path: Path) -> Iterator[str]:
    name = f"zasgi_discovery_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    yield name
    sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


@pytest.fixture
def loopback_pair(zmq_ctx: zmq.Context[Any]) -> Iterator[tuple[int, list[ScriptedFrontend]]]:
    """Two front ends on one port, at 127.0.0.1 and 127.0.0.2 (one name, two addresses)."""
    port = free_tcp_port()
    made = [ScriptedFrontend(zmq_ctx, f"tcp://127.0.0.{i}:{port}") for i in (1, 2)]
    yield port, made
    for frontend in made:
        frontend.close()


def request(stream_id: int) -> ev.Request:
    return ev.Request(stream_id, "GET", "http", "1.1", b"/", b"", "", (), None, None, b"", False, False, {})


async def test_worker_follows_a_name_as_front_ends_come_and_go(
    app_module: str, tmp_path: Path, loopback_pair: tuple[int, list[ScriptedFrontend]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    port, (fe1, fe2) = loopback_pair
    dns = Dns(frontends=["127.0.0.1"])
    monkeypatch.setattr(discovery, "loop_getaddrinfo", dns)
    config = WorkerConfig(app=f"{app_module}:app", app_dir=str(tmp_path), connect=(f"tcp://frontends:{port}",),
                          graceful_timeout_s=5.0, reconnect_max_s=0.5, resolve_interval_s=0.05)  # fmt: skip
    worker = Worker(config)
    task = asyncio.ensure_future(worker.run())
    try:
        await fe1.expect(ev.Hello)
        fe1.welcome(heartbeat_ms=200)
        await asyncio.wait_for(worker.lifecycle.reached(WorkerPhase.READY), 5)
        dns.names["frontends"] = ["127.0.0.1", "127.0.0.2"]  # a front end appears: joined
        await fe2.expect(ev.Hello)
        fe2.welcome(heartbeat_ms=200)
        fe2.send(request(1))
        assert (await fe2.expect(ev.Response)).status == 200
        dns.names["frontends"] = ["127.0.0.2"]  # one vanishes: drained, then BYE, the other serves on
        await fe1.expect(ev.Drain)
        await fe1.expect(ev.Bye)
        await until(lambda: [c.endpoint for c in worker.connections] == [f"tcp://127.0.0.2:{port}"], 5)
        fe2.send(request(3))
        assert (await fe2.expect(ev.Response)).status == 200
        worker.request_stop()
        await fe2.expect(ev.Drain)
        await fe2.expect(ev.Bye)
        assert await asyncio.wait_for(task, 10) == EXIT_OK
    finally:
        if not task.done():
            worker.request_stop()
            worker.request_stop()
            await asyncio.wait_for(task, 10)


async def test_worker_joins_localhost_once(
    app_module: str, tmp_path: Path, loopback_pair: tuple[int, list[ScriptedFrontend]]
) -> None:
    port, (fe1, _) = loopback_pair
    config = WorkerConfig(app=f"{app_module}:app", app_dir=str(tmp_path), connect=(f"tcp://localhost:{port}",),
                          graceful_timeout_s=5.0, reconnect_max_s=0.5)  # fmt: skip
    worker = Worker(config)
    task = asyncio.ensure_future(worker.run())
    await fe1.expect(ev.Hello)
    fe1.welcome(heartbeat_ms=200)
    await asyncio.wait_for(worker.lifecycle.reached(WorkerPhase.READY), 5)  # no ::1 to wait for
    assert [c.endpoint for c in worker.connections] == [f"tcp://127.0.0.1:{port}"]
    worker.request_stop()
    await fe1.expect(ev.Drain)
    assert await asyncio.wait_for(task, 10) == EXIT_OK


# ---------------------------------------------------------------- the health probe


def test_proc_address_decodes_both_families() -> None:
    assert discovery._proc_address("0100007F:1B58") == ("127.0.0.1", 7000)
    assert discovery._proc_address("00000000000000000000000001000000:1B58") == ("::1", 7000)
    assert discovery._proc_address("0000000000000000FFFF00000500000A:1B58") == ("10.0.0.5", 7000)


def test_check_needs_an_established_connection_to_every_front_end(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        endpoint = f"tcp://127.0.0.1:{port}"
        assert discovery.main(["--check", endpoint]) == 1
        assert f"not connected to: {endpoint}" in capsys.readouterr().err
        with socket.create_connection(("127.0.0.1", port)), server.accept()[0]:
            assert discovery.main(["--check", endpoint, "ipc:///run/fe.sock"]) == 0

    def no_such_name(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(discovery.socket, "getaddrinfo", no_such_name)  # no DNS server needed
    assert discovery.main(["--check", "tcp://nowhere.invalid:7000"]) == 1
    assert "cannot resolve" in capsys.readouterr().err
    assert discovery.main(["tcp://frontend"]) == 2


# ---------------------------------------------------------------- file:// lists (zasgi run's front ends)


def test_file_target_needs_an_absolute_path() -> None:
    assert parse_endpoint("file:///run/zasgi/fes") == Target("file:///run/zasgi/fes", path="/run/zasgi/fes")
    with pytest.raises(ValueError, match="absolute path"):
        parse_endpoint("file://fes")


def test_read_list_takes_static_endpoints_only(tmp_path: Path) -> None:
    path = tmp_path / "fes"
    write_list(str(path), ["ipc:///run/a.sock", "tcp://10.0.0.1:7000"])
    assert read_list(str(path)) == ("ipc:///run/a.sock", "tcp://10.0.0.1:7000")
    path.write_text("# front ends\nipc:///run/a.sock\n\ntcp://fe:7000\n")
    with pytest.raises(ValueError, match="ipc:// or tcp://ADDRESS:PORT endpoints only"):
        read_list(str(path))


async def test_a_listed_front_end_joins_and_an_unlisted_one_drains(tmp_path: Path) -> None:
    path = tmp_path / "fes"
    write_list(str(path), ["ipc:///run/a.sock"])
    h = Harness([f"file://{path}"], Dns())
    assert (await h.set.refresh()).add == ("ipc:///run/a.sock",)
    assert h.set.dynamic
    write_list(str(path), ["ipc:///run/a.sock", "ipc:///run/b.sock"])
    assert await h.set.refresh() == Plan(add=("ipc:///run/b.sock",))
    write_list(str(path), ["ipc:///run/b.sock"])
    assert await h.set.refresh() == Plan(retire=("ipc:///run/a.sock",))
    await until(lambda: h.made["ipc:///run/a.sock"].calls == ["start", "drain", "finish", "close"], 5)
    path.unlink()  # unreadable: the list it had is kept
    assert await h.set.refresh() == Plan()
    assert h.set.active == [h.made["ipc:///run/b.sock"]]
