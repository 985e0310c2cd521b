"""The front end's lifecycles as tables: connection (ConnPhase), HTTP stream (Phase), WebSocket (WsPhase),
the front end itself (FrontendPhase, retire.py).

Each table covers every phase, every phase is reachable from the first, every phase but the
terminal ones can still end, illegal moves raise and leave the phase alone, and only the owning
module assigns its phase (others call its methods)."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from frontend import connection, retire, stream, ws_stream

FRONTEND = Path(connection.__file__).parent
TABLES = [
    (connection.ConnPhase, connection.TRANSITIONS, connection.ConnPhase.READING,
     {connection.ConnPhase.CLOSED}, "connection.py", r"\._phase = "),
    (stream.Phase, stream.TRANSITIONS, stream.Phase.QUEUED, {stream.Phase.FAILED}, "stream.py",
     r"\.phase = "),
    (ws_stream.WsPhase, ws_stream.TRANSITIONS, ws_stream.WsPhase.QUEUED,
     {ws_stream.WsPhase.DONE, ws_stream.WsPhase.FAILED}, "ws_stream.py", r"\.phase = "),
    (retire.FrontendPhase, retire.TRANSITIONS, retire.FrontendPhase.SERVING, {retire.FrontendPhase.STOPPED},
     "retire.py", r"\._phase = "),
]  # fmt: skip
IDS = [t[0].__name__ for t in TABLES]


@pytest.mark.parametrize(("phases", "table", "first", "terminal", "owner", "write"), TABLES, ids=IDS)
def test_table_is_complete_and_every_phase_reachable(
    phases: type[Enum],
    table: dict[Any, frozenset[Any]],
    first: Any,
    terminal: set[Any],
    owner: str,
    write: str,
) -> None:
    assert set(table) == set(phases)
    seen, todo = {first}, [first]
    while todo:
        for nxt in table[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(phases)
    for phase in phases:  # every phase can still reach an end
        reach, todo = {phase}, [phase]
        while todo:
            for nxt in table[todo.pop()] - reach:
                reach.add(nxt)
                todo.append(nxt)
        assert reach & terminal, phase


@pytest.mark.parametrize(("phases", "table", "first", "terminal", "owner", "write"), TABLES, ids=IDS)
def test_only_the_owner_writes_the_phase(
    phases: type[Enum], table: Any, first: Any, terminal: Any, owner: str, write: str
) -> None:
    for path in sorted(FRONTEND.glob("*.py")):
        text = path.read_text()
        writes = [line for line in text.splitlines() if re.search(write, line)]
        if path.name == owner:
            assert writes  # (__init__, _to, and the hot path's inline checked moves)
        elif "TRANSITIONS" not in text:  # (a module with its own lifecycle table writes its own)
            assert not writes, (path.name, writes)
        # Nobody assigns another object's phase: only ``self.`` on the left.
        others = re.findall(r"^\s*(?!self\.)[\w.]+\._?phase = ", text, re.M)
        assert not others, (path.name, others)


def test_http_stream_moves() -> None:
    s = object.__new__(stream.HttpStream)
    s.stream_id, s.phase = 7, stream.Phase.QUEUED
    with pytest.raises(stream.IllegalTransition):
        s.done()  # a response before dispatch
    assert s.phase is stream.Phase.QUEUED
    s._to(stream.Phase.DISPATCHED)
    s.responding()
    s.done()
    with pytest.raises(stream.IllegalTransition):
        s.responding()
    s.fail()  # a failure after the end (a bug of ours): the stream still ends
    s.fail()  # the first failure wins; the rest are no-ops
    assert s.phase is stream.Phase.FAILED


def test_ws_stream_moves(tmp_path: Path, zmq_ctx: Any) -> None:
    # Built whole (not object.__new__): the compiled build's WsStream is a native class.
    from frontend.dispatch import Dispatcher

    from .conftest import make_config

    s = ws_stream.WsStream(Dispatcher(make_config(tmp_path), zmq_ctx), connect=())
    assert s.phase is ws_stream.WsPhase.QUEUED
    with pytest.raises(ws_stream.IllegalTransition):
        s.denying()
    s._to(ws_stream.WsPhase.CONNECTING)
    s.opened()
    assert s.phase is ws_stream.WsPhase.OPEN
    s.opened()  # (handed off at once: stays where it is)
    s.done()
    s.fail()  # the first end wins
    assert s.phase is ws_stream.WsPhase.DONE


def test_connection_moves() -> None:
    c = object.__new__(connection.Connection)
    c._phase = connection.ConnPhase.FAILED
    with pytest.raises(connection.IllegalTransition):
        c._to(connection.ConnPhase.READING)
    assert c.phase is connection.ConnPhase.FAILED
    c._to(connection.ConnPhase.CLOSED)
    assert c.phase is connection.ConnPhase.CLOSED


@pytest.mark.parametrize("phase", list(stream.Phase))
def test_the_inline_checked_moves_agree_with_the_table(phase: stream.Phase) -> None:
    """dispatch() and done() check their move without the table (hot-path rule 7): the same answer."""
    for move, target in ((stream.HttpStream.dispatch, stream.Phase.DISPATCHED),
                         (stream.HttpStream.done, stream.Phase.DONE)):  # fmt: skip
        s = object.__new__(stream.HttpStream)
        s.stream_id, s.phase = 1, phase
        args = (None, False) if move is stream.HttpStream.dispatch else ()
        legal = target in stream.TRANSITIONS[phase]
        try:
            move(s, *args)  # type: ignore[operator]
        except stream.IllegalTransition:
            assert not legal, (phase, target)
        except AttributeError:  # past the check: the rest needs a real stream
            assert legal, (phase, target)
        else:
            assert legal and s.phase is target, (phase, target)
