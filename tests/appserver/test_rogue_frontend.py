"""A rogue front end cannot crash a worker, reach its app with garbage, or leak a stream (PROTOCOL §10).

The mirror image of tests/frontend/test_rogue_worker.py. A real worker process
(``run_worker``, capacity 8 HTTP and 4 WebSocket streams, --log-level warning)
connects to a ROUTER socket played by the test: it WELCOMEs the worker (again
after every re-HELLO) and, per hypothesis example, sends generated messages --
mostly front-end events (REQUEST, BODY, DISCONNECT, CREDIT, RESET, WS_CONNECT,
WS_MESSAGE, WS_CLOSE, WS_RESUME) with some fields, stream ids or states
wrong, plus the worker's own kinds, control events at the wrong time (WELCOME,
BYE, UNKNOWN_PEER, DRAIN...; not REFUSE, see _ANY_KIND), undecodable frames and
extension types.
After each example:

* the worker process is alive and logged no error and no traceback; every
  undecodable message and every bad control event it got left a warning;
* the app (tests/apps/rogue_target.py, which records every call's raw path)
  was called only for well-formed openers the worker had to accept -- never
  for garbage, a reused stream id, or a kind that opens nothing;
* once the test RESETs every stream it opened, no app call is still running
  (GET /count says 0), and all 8 HTTP and 4 WebSocket slots open at once:
  no stream leaked.

Examples: ZASGI_FUZZ_EXAMPLES (default 200). The on-demand run, in parts with
different seeds: ``ZASGI_FUZZ_EXAMPLES=20000 python -m pytest
tests/appserver/test_rogue_frontend.py -o timeout=4000 -p no:randomly
--hypothesis-seed=N`` (tests/benchmarks/README.md has the last one's counts).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.helpers.processes import Proc
from wire import DecodeError, codec
from wire import events as ev

EXAMPLES = int(os.environ.get("ZASGI_FUZZ_EXAMPLES", "200"))
CAPACITY, WS_CAPACITY = 8, 4
DEADLINE_S = 15.0  # a loaded 2-core machine; a real hang or leak blows through it
K = ev.Kind
FEATURES = ("http", "trailers", "pathsend", "linger", "pulse", "websocket", "ws-denial", "handoff")
WORKER_MAIN = f"""
import sys
from appserver.config import WorkerConfig
from appserver.worker import run_worker
config = WorkerConfig(app="tests.apps.rogue_target:app", connect=(sys.argv[1],), capacity={CAPACITY},
                      ws_capacity={WS_CAPACITY}, graceful_timeout_s=1.0, reconnect_max_s=0.5,
                      log_level="warning")
sys.exit(run_worker(config))
"""


# ---------------------------------------------------------------- the rogue front end


class RogueFrontend:
    """The ROUTER side: answers every HELLO with a sane WELCOME, collects what the worker says."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.peer: bytes | None = None
        self.handshakes = 0
        self.next_sid = 1
        self.inbox: dict[int, list[Any]] = {}  # stream id -> what the worker sent on it

    def welcome(self) -> ev.Welcome:
        return ev.Welcome(0, "rogue", 60_000, 3, 1 << 20, 1 << 20, FEATURES)

    def pump(self, timeout_s: float = 0.0) -> None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return
        while True:
            try:
                peer, *frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for event in codec.decode(frames):
                if type(event) is ev.Hello:
                    if self.peer is not None and _socket_number(peer) < _socket_number(self.peer):
                        continue  # a HELLO its closed socket sent, overtaken by the new one's
                    self.peer = peer
                    self.handshakes += 1
                    self.send(codec.encode([self.welcome()]))
                elif event.stream_id:
                    self.inbox.setdefault(event.stream_id, []).append(event)

    def send(self, frames: list[Any]) -> None:
        if self.peer is not None:
            try:
                self.sock.send_multipart([self.peer, *frames], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # a peer gone (it reconnected under a new id): dropped, as ROUTER does

    def sid(self) -> int:
        sid, self.next_sid = self.next_sid, self.next_sid + 1
        return sid

    def close(self) -> None:
        self.sock.close(linger=0)


def _socket_number(peer: bytes) -> int:
    """zasgi's routing ids are ``worker_id/N``, N counting the worker's sockets (connection.py)."""
    return int(peer.rpartition(b"/")[2])


@dataclass
class Env:
    ctx: zmq.Context[Any]
    rogue: RogueFrontend
    proc: Proc
    calls: Path
    allowed: set[bytes] = field(default_factory=set)  # the paths' last segments the app may see
    warnings_needed: int = 0  # bad messages sent so far that must each have left a warning
    warnings: int = 0  # ... and the warnings that did
    called: set[bytes] = field(default_factory=set)
    running: set[bytes] = field(default_factory=set)  # app calls begun and not returned, by path mark
    what: dict[bytes, bytes] = field(default_factory=dict)
    _log_at: int = 0  # how far check() has read the log and the calls
    _calls_at: int = 0

    def new_log(self) -> str:
        with open(self.proc.log_path, "rb") as f:
            f.seek(self._log_at)
            data = f.read()
        whole = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next check
        self._log_at += len(whole)
        return whole.decode(errors="replace")

    def new_calls(self) -> list[bytes]:
        with open(self.calls, "rb") as f:
            f.seek(self._calls_at)
            data = f.read()
        whole = data[: data.rfind(b"\n") + 1]
        self._calls_at += len(whole)
        return whole.splitlines()


def request(sid: int, path: bytes, body: bytes = b"", more: bool = False) -> ev.Request:
    return ev.Request(sid, "GET", "http", "1.1", path, b"", "", (), None, None, body, more, False, {})


def ws_connect(sid: int, path: bytes) -> ev.WsConnect:
    return ev.WsConnect(sid, "ws", "1.1", path, b"", "", (), None, None, (), {})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    directory = tmp_path_factory.mktemp("rogue-fe")
    ipc = directory if len(str(directory)) < 80 else Path(tempfile.mkdtemp(prefix="zroguefe-"))
    calls = directory / "calls"
    calls.touch()
    ctx: zmq.Context[Any] = zmq.Context()
    rogue = RogueFrontend(ctx, f"ipc://{ipc}/fe.sock")
    proc = Proc("worker", [sys.executable, "-c", WORKER_MAIN, f"ipc://{ipc}/fe.sock"], directory,
                {"ROGUE_CALLS": str(calls)})  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while rogue.handshakes == 0 and time.monotonic() < deadline and proc.popen.poll() is None:
            rogue.pump(0.1)
        assert rogue.handshakes, f"the worker never said HELLO:\n{proc.log()[-3000:]}"
        environment = Env(ctx, rogue, proc, calls)
        probe(environment)  # the worker serves before the first example
        yield environment
    finally:
        proc.kill_tree()
        rogue.close()
        ctx.term()


# ---------------------------------------------------------------- probes: alive, nothing leaked


def _answer(env: Env, sid: int, deadline: float) -> Any:
    """The worker's first RESPONSE or RESET on ``sid`` (None if the handshake was lost meanwhile)."""
    while time.monotonic() < deadline:
        for event in env.rogue.inbox.get(sid, ()):
            if type(event) in (ev.Response, ev.Reset, ev.WsAccept, ev.WsClose):
                return event
        handshakes = env.rogue.handshakes
        env.rogue.pump(0.01)
        if env.rogue.handshakes != handshakes:
            return None  # a re-HELLO: the stream was failed without a word (Rule 8); ask again
    return None


def _ask(env: Env, make: Any, prefix: bytes, deadline: float) -> Any:
    """Open a stream with ``make(sid, prefix/sid)`` (a new one each try) until the worker answers one."""
    while time.monotonic() < deadline:
        sid = env.rogue.sid()
        path = b"%s/%d" % (prefix, sid)
        env.allowed.add(_mark(path))
        env.rogue.send(codec.encode([make(sid, path)]))
        answer = _answer(env, sid, min(deadline, time.monotonic() + 1.0))
        if answer is not None:
            return answer
    raise AssertionError(
        f"the worker did not answer {prefix!r} (talking to {env.rogue.peer!r}, "
        f"handshake {env.rogue.handshakes}):\n{env.proc.log()[-4000:]}"
    )


def probe(env: Env) -> None:
    """Until one round runs on one handshake: no app call still running, every slot free."""
    deadline = time.monotonic() + DEADLINE_S
    env.rogue.inbox.clear()
    while True:
        handshakes = env.rogue.handshakes
        answer = _ask(env, request, b"/count", deadline)
        if _reused(answer):
            rehandshake(env)  # the rogue's stream ids went past ours where the test lost track
            continue
        if type(answer) is not ev.Response or answer.body != b"0":
            if time.monotonic() > deadline - 1.5:
                read_calls(env)
                running = [env.what[p] for p in env.running][:10]
                raise AssertionError(
                    f"app calls still running: {answer!r}, {running}\n{env.proc.log()[-3000:]}"
                )
            time.sleep(0.01)
            continue
        # Every slot free: CAPACITY requests and WS_CAPACITY WebSockets at once, none refused.
        sids = [env.rogue.sid() for _ in range(CAPACITY + WS_CAPACITY)]
        events = [request(sid, b"/probe/%d" % sid) for sid in sids[:CAPACITY]]
        events += [ws_connect(sid, b"/ws-probe/%d" % sid) for sid in sids[CAPACITY:]]
        env.allowed.update(_mark(e.raw_path) for e in events)
        env.rogue.send(codec.encode(events))
        answers = [_answer(env, sid, deadline) for sid in sids]
        env.rogue.send(codec.encode([ev.WsClose(sid, 1000, "") for sid in sids[CAPACITY:]]))
        if any(_reused(a) for a in answers):
            rehandshake(env)
            continue
        if env.rogue.handshakes == handshakes:
            assert all(type(a) is ev.Response and a.status == 200 for a in answers[:CAPACITY]), answers
            assert all(type(a) is ev.WsAccept for a in answers[CAPACITY:]), answers
            return
        assert time.monotonic() < deadline, f"no quiet handshake to probe on:\n{env.proc.log()[-3000:]}"


WARNINGS = ("dropped an unreadable message", "invalid control event", "unexpected ", " lost (")


def _reused(answer: Any) -> bool:
    return (
        type(answer) is ev.Reset and answer.code == ev.ResetCode.PROTOCOL_ERROR and "reused" in answer.reason
    )


def rehandshake(env: Env) -> None:
    """UNKNOWN_PEER: the worker fails its streams and says HELLO again, its stream ids start over."""
    deadline = time.monotonic() + DEADLINE_S
    handshakes = env.rogue.handshakes
    env.rogue.send(codec.encode([ev.UnknownPeer()]))
    while env.rogue.handshakes == handshakes:
        assert time.monotonic() < deadline, f"no HELLO after UNKNOWN_PEER:\n{env.proc.log()[-3000:]}"
        env.rogue.pump(0.05)


def check(env: Env) -> None:
    assert env.proc.popen.poll() is None, f"the worker died:\n{env.proc.log()[-4000:]}"
    lines = env.new_log().splitlines()
    bad = [line for line in lines if "ERROR" in line or "CRITICAL" in line or "Traceback" in line]
    assert not bad, "the worker logged:\n" + "\n".join(lines[-40:])
    env.warnings += sum(1 for line in lines if any(w in line for w in WARNINGS))
    assert env.warnings >= env.warnings_needed, f"{env.warnings_needed} bad messages, {env.warnings} warnings"
    read_calls(env)


def read_calls(env: Env) -> None:
    for line in env.new_calls():
        path = line[1:].split(b" ", 1)[0]
        env.what[path] = line
        if line.startswith(b"-"):
            env.running.discard(path)
            continue
        assert path in env.allowed, (
            f"the app was called for {path!r}, never a well-formed opener it had to take"
        )
        assert path not in env.called, f"the app was called twice for {path!r}"
        env.called.add(path)
        env.running.add(path)


# ---------------------------------------------------------------- what the rogue sends

_names = st.sampled_from([b"host", b"content-type", b"x-a", b"", b"bad\r\nname", b"\xff"])
_headers = st.lists(st.tuples(_names, st.sampled_from([b"1", b"text/plain", b"\r\n", b"\x00"])), max_size=3)
_junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8),
                  st.binary(max_size=8), st.floats(), st.lists(st.integers(-9, 2**40), max_size=2),
                  st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2))  # fmt: skip
_payload = st.one_of(st.binary(max_size=300), st.integers(1, 3), st.just(b"p" * 70_000))
_route = st.sampled_from([b"/echo", b"/stream", b"/slow", b"/probe", b"/ws", b"", b"relative", b"/%zz"])
_address = st.one_of(st.none(), st.tuples(st.sampled_from(["127.0.0.1", "", "::1"]), st.integers(-1, 70_000)))
_connect = [st.sampled_from(["ws", "wss", "http"]), st.sampled_from(["1.1", "2", "9"]), _route,
            st.binary(max_size=10), st.sampled_from(["", "/root", "é"]), _headers, _address, _address,
            st.lists(st.sampled_from(["chat", "", "x y"]), max_size=2), st.just({})]  # fmt: skip
_FIELDS: dict[int, list[st.SearchStrategy[Any]]] = {
    K.REQUEST: [st.sampled_from(["GET", "POST", "", "G\r\nET"]), st.sampled_from(["http", "https", "ftp"]),
                st.sampled_from(["1.1", "1.0", "2", "x"]), _route, st.binary(max_size=10),
                st.sampled_from(["", "/root"]), _headers, _address, _address, _payload, st.booleans(),
                st.booleans(), st.one_of(st.just({}), st.just({"request_id": "r"}), st.just({"tls": 5}))],
    K.BODY: [_payload, st.booleans()],
    K.DISCONNECT: [],
    K.CREDIT: [st.integers(0, 2**63 - 1)],
    K.RESET: [st.integers(0, 7), st.text(max_size=10)],
    K.WS_CONNECT: _connect,
    K.WS_MESSAGE: [st.booleans(),
                   st.one_of(st.binary(max_size=100), st.just(b"\xff\xfe"), st.integers(1, 2))],
    K.WS_CLOSE: [st.integers(999, 5000), st.text(max_size=130)],
    K.WS_RESUME: [st.tuples(*_connect).map(list), st.one_of(st.none(), st.just("chat")), _junk],
    # The worker's own kinds, and control events at any time.
    K.RESPONSE: [st.integers(100, 999), _headers, _payload, st.booleans(), st.booleans()],
    K.TRAILERS: [_headers, st.booleans()],
    K.PATHSEND: [st.just("/etc/passwd")],
    K.WS_ACCEPT: [st.none(), _headers],
    K.WS_HANDOFF: [_junk],
    K.HELLO: [st.just(1), st.just("x"), st.just(1), st.just(1), st.just(1), st.just(1), st.just(["http"]),
              st.just({})],
    K.WELCOME: [st.text(max_size=4), st.integers(1000, 60_000), st.integers(1, 5), st.integers(1, 1 << 20),
                st.just(1 << 20), st.lists(st.sampled_from(FEATURES), max_size=3)],
    K.REFUSE: [st.text(max_size=5)],
    K.HEARTBEAT: [], K.DRAIN: [], K.LINGER: [], K.BYE: [st.text(max_size=5)], K.UNKNOWN_PEER: [],
}  # fmt: skip
_FRONT_END_KINDS = [K.REQUEST, K.BODY, K.DISCONNECT, K.CREDIT, K.RESET, K.WS_CONNECT, K.WS_MESSAGE,
                    K.WS_CLOSE, K.WS_RESUME]  # fmt: skip
_OPENERS = {K.REQUEST: 5, K.WS_CONNECT: 4}  # the raw_path's index in the event array
# Never REFUSE: it answers HELLO, and a worker refused while it says HELLO (after an UNKNOWN_PEER,
# say) exits by design (Rule 6). A stray one at any other time is ignored: test_connection.py.
_ANY_KIND = [k for k in K if k != K.REFUSE]
_NUMBERS = st.integers(0, 50).filter(lambda k: k != K.REFUSE)


# A plan is drawn whole, before anything is sent, and turned into frames against the rogue's state
# (its stream ids) only then: hypothesis' draws never depend on what the worker did.
_wrong = st.tuples(st.integers(0, 20), st.sampled_from(["junk", "drop", "extra"]), _junk)
_mutation = st.one_of(st.none(), st.none(), st.none(), _wrong)  # a field wrong, missing or extra: 1 in 4


def _plan_of(kind: int) -> st.SearchStrategy[Any]:
    return st.tuples(
        st.just(kind), st.integers(0, 15), st.tuples(*_FIELDS.get(kind, [])).map(list), _mutation
    )


_event_plan = st.one_of(
    st.one_of([_plan_of(k) for k in _FRONT_END_KINDS]),
    st.one_of([_plan_of(k) for k in _ANY_KIND]),
    _NUMBERS.flatmap(_plan_of),
)
_message_plan = st.one_of(
    st.tuples(st.just("garbage"), st.lists(st.binary(max_size=40), min_size=1, max_size=3)),  # not msgpack...
    st.tuples(st.just("ext")),  # an extension type inside an otherwise fine event
    *[
        st.tuples(
            st.just("events"),
            st.lists(_event_plan, min_size=1, max_size=4),
            st.lists(st.integers(0, 200), max_size=3),
        )
    ]
    * 18,  # fmt: skip
)
_example_plan = st.lists(_message_plan, min_size=1, max_size=6)


def _event(plan: Any, env: Env, opened: list[int]) -> list[Any]:
    kind, choice, fields, mutation = plan
    if kind in _OPENERS or kind == K.WS_RESUME:
        stream_id = env.rogue.sid() if choice < 12 else (opened[-1] if opened else 1)  # mostly fresh; a reuse
        opened.append(stream_id)
    elif choice == 0 or kind < 16:
        stream_id = 0 if choice < 14 else 1
    elif choice < 11:
        stream_id = opened[-1 - choice % len(opened)] if opened else 1  # mostly its streams
    else:
        stream_id = [1, env.rogue.next_sid + 5, 2**63 - 1, -1, 2**64 - 1][choice - 11]
    fields = list(fields)
    if fields and mutation is not None:  # one wrong field, or one missing, or one extra
        i, how, junk = mutation
        if how == "junk":
            fields[i % len(fields)] = junk
        elif how == "drop":
            fields.pop()
        else:
            fields.append(junk)
    event = [kind, stream_id, *fields]
    index = _OPENERS.get(kind)
    if kind == K.WS_RESUME and len(event) > 2 and type(event[2]) is list and len(event[2]) > 2:
        event[2] = list(event[2])
        event[2][2] = _marked(event[2][2], stream_id)
    elif index is not None and len(event) > index:
        event[index] = _marked(event[index], stream_id)
    return event


def _marked(path: Any, sid: int) -> Any:
    """A unique path per opener (``route/o<sid>-<n>``), so the app's record names the event it came from."""
    return path + b"/o%d-%d" % (sid, next(_marks)) if type(path) is bytes else path


_marks = iter(range(10**12))


def _message(plan: Any, env: Env, opened: list[int]) -> list[bytes]:
    if plan[0] == "garbage":
        return list(plan[1])
    if plan[0] == "ext":
        return [msgpack.packb([[K.REQUEST, env.rogue.sid(), msgpack.ExtType(1, b"x")]])]
    _, events, extra = plan
    frames = [msgpack.packb([_event(e, env, opened) for e in events], use_bin_type=True)]
    return frames + [b"f" * n for n in extra]


def _account(env: Env, frames: list[bytes], state: dict[str, Any]) -> None:
    """What the worker must make of ``frames``, by the same decoder and Rules 6-14: which openers it
    accepts (their paths join ``env.allowed``), which bad messages must leave a warning."""
    try:
        events = codec.decode(frames)
    except DecodeError:
        env.warnings_needed += state["certain"]  # (else it may have gone to a closed socket)
        return
    for event in events:
        sid, kind = event.stream_id, type(event)
        if sid == 0:
            if state["certain"] and kind is not ev.Heartbeat and kind is not ev.UnknownPeer:
                env.warnings_needed += 1  # unexpected KIND ignored; invalid control event; lost (BYE)
            if kind in (ev.Invalid, ev.Bye, ev.UnknownPeer):
                state["certain"] = False  # the handshake starts over: stop modelling this example
            continue
        if not state["certain"]:
            if kind in (ev.Request, ev.WsConnect, ev.WsResume):
                env.allowed.add(_mark(event.connect.raw_path if kind is ev.WsResume else event.raw_path))
            continue
        if kind in (ev.Request, ev.WsConnect, ev.WsResume) and sid > state["highest"]:
            env.allowed.add(_mark(event.connect.raw_path if kind is ev.WsResume else event.raw_path))
        state["highest"] = max(state["highest"], sid)


def _mark(raw_path: bytes) -> bytes:
    return raw_path.rsplit(b"/", 1)[-1]


_counter = iter(range(10**9))


@pytest.mark.timeout(120 + EXAMPLES)
# No shrinking: the worker's state carries over from example to example, so a replay is not the same
# run; the first failure's own report (and the worker's log) say what happened.
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
          phases=(Phase.explicit, Phase.generate))  # fmt: skip
@given(plan=_example_plan)
def test_a_rogue_front_end_cannot_crash_the_worker_reach_the_app_or_leak(env: Env, plan: list[Any]) -> None:
    next(_counter)
    # Stream ids seen by this handshake so far are below next_sid: the worker's "highest" is at most that.
    state: dict[str, Any] = {"certain": True, "highest": env.rogue.next_sid - 1}
    handshakes = env.rogue.handshakes
    opened: list[int] = []
    for message in plan:
        frames = _message(message, env, opened)
        _account(env, frames, state)
        env.rogue.send(frames)
        env.rogue.pump(0.001)
        if env.rogue.handshakes != handshakes:
            state["certain"] = False
    env.rogue.send(codec.encode([ev.Reset(sid, ev.ResetCode.CANCELLED, "done") for sid in opened if sid > 0]
                                or [ev.Heartbeat()]))  # fmt: skip
    if not state["certain"] or state["highest"] >= env.rogue.next_sid:
        rehandshake(env)  # stream ids past ours (2**63 - 1...) leave no id to open: start over (Rule 8)
    probe(env)
    check(env)
