"""WebSocket handoff end to end: ``zasgi frontend`` + two ``zasgi appserver``, SIGTERM the busy one.

Clients on /ws/handoff keep sending numbered texts (several in flight at a
time) and check every reply ``N:PID:TEXT``: N is the app's session counter,
carried across workers in the handoff state, so a lost, duplicated or
reordered message shows as a wrong N. The worker holding every client is
SIGTERMed mid-stream; each client must keep its connection while its replies
move to the other worker's pid. A plain /ws/echo client on the same worker
gets 1012 once the grace period is over.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed

from tests.helpers.processes import Proc, free_tcp_port, zasgi

from .conftest import PROBE, READY_APPSERVER, READY_FRONTEND, Server, stop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
CLIENTS = 6
IN_FLIGHT = 4  # texts a client has sent and not yet seen answered
GRACE_S = 2.0  # the app servers' --timeout-graceful-shutdown
AFTER_SWITCH = 30  # replies each client must get from the new worker
DEADLINE_S = 60.0


@dataclass
class Session:
    """What one /ws/handoff client saw."""

    pids: list[int] = field(default_factory=list)  # the worker of each reply, in order
    times: list[float] = field(default_factory=list)  # when each reply came (monotonic)
    errors: list[str] = field(default_factory=list)

    def switched(self, old: int) -> int:
        return sum(1 for pid in self.pids if pid != old)


def start_frontend(tmp: Path) -> tuple[Server, str]:
    probe_dir = tmp / "probe"
    probe_dir.mkdir(exist_ok=True)
    backend = f"tcp://127.0.0.1:{free_tcp_port()}"
    server = Server("", probe_dir)
    fe = Proc("frontend", zasgi("frontend", "--port", "0", "--backend", backend), tmp)
    server.procs.append(fe)
    try:
        server.url = fe.wait_for(READY_FRONTEND, 60).group(1)
    except BaseException:
        stop(server)
        raise
    return server, backend


def add_appserver(server: Server, tmp: Path, backend: str, name: str) -> Proc:
    argv = zasgi("appserver", PROBE, "--connect", backend, "--workers", "1",
                 "--timeout-graceful-shutdown", str(GRACE_S), "--log-level", "debug")  # fmt: skip
    proc = Proc(name, argv, tmp, {"PROBE_DIR": str(server.probe_dir)})
    server.procs.append(proc)
    proc.wait_for(READY_APPSERVER, 60)
    return proc


async def converse(ws: ClientConnection, i: int, session: Session, stop: asyncio.Event) -> None:
    """Send numbered texts, at most IN_FLIGHT unanswered, and check each reply; after ``stop``
    one last text, whose reply ends the conversation."""
    sent = answered = 0
    last: int | None = None  # the number of the last text, once known
    room = asyncio.Semaphore(IN_FLIGHT)

    async def sender() -> None:
        nonlocal sent, last
        while True:
            await room.acquire()
            if stop.is_set():
                last = sent  # known before it is sent: the reply cannot come first
            sent += 1
            await ws.send(f"c{i}-{sent - 1}")
            if last is not None:
                return
            await asyncio.sleep(0.005)

    task = asyncio.ensure_future(sender())
    try:
        while last is None or answered <= last:
            reply = await asyncio.wait_for(ws.recv(), 30)
            n, pid, text = str(reply).split(":", 2)
            if (int(n), text) != (answered + 1, f"c{i}-{answered}"):
                session.errors.append(f"reply {answered}: got {reply!r}")
                return
            session.pids.append(int(pid))
            session.times.append(time.monotonic())
            answered += 1
            room.release()
    except (ConnectionClosed, TimeoutError) as exc:
        sender_state = task.exception() if task.done() else "sender running"
        session.errors.append(f"after {answered} replies ({sent} sent): {exc!r}; {sender_state!r}")
    finally:
        task.cancel()


async def scenario(server: Server, tmp: Path, backend: str) -> None:
    url = server.url.replace("http://", "ws://")
    old = server.procs[1]
    # The app thinks a little per message, so some are still queued in the worker at the handoff.
    handoff = [await aconnect(f"{url}/ws/handoff?delay=0.01", open_timeout=30) for _ in range(CLIENTS)]
    plain = await aconnect(f"{url}/ws/echo", open_timeout=30)
    try:
        await plain.send("hello")
        assert await asyncio.wait_for(plain.recv(), 10) == "hello"
        sessions = [Session() for _ in handoff]
        stop_talking = asyncio.Event()
        talks = [
            asyncio.ensure_future(converse(ws, i, s, stop_talking))
            for i, (ws, s) in enumerate(zip(handoff, sessions, strict=True))
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while not all(len(s.pids) >= 10 for s in sessions) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        first = {s.pids[0] for s in sessions if s.pids}
        assert len(first) == 1, f"clients spread over {first} before any restart\n{server.logs()}"
        old_pid = first.pop()
        await asyncio.to_thread(add_appserver, server, tmp, backend, "appserver-new")
        old.signal(signal.SIGTERM)
        sigterm_at = time.monotonic()
        while (
            not all(s.switched(old_pid) >= AFTER_SWITCH or s.errors for s in sessions)
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.05)
        stop_talking.set()
        await asyncio.wait_for(asyncio.gather(*talks), 60)
        # The plain client: closed with 1012 once the grace period is over.
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(plain.recv(), GRACE_S + 30)
        closed_after_s = time.monotonic() - sigterm_at
        for i, s in enumerate(sessions):
            assert not s.errors, f"client {i}: {s.errors}\n{server.logs()}"
            assert s.pids[0] == old_pid and s.pids[-1] != old_pid, f"client {i}: {s.pids}\n{server.logs()}"
            switches = sum(1 for a, b in zip(s.pids, s.pids[1:], strict=False) if a != b)
            assert switches == 1, f"client {i} moved {switches} times: {s.pids}"
        assert all(ws.close_code is None for ws in handoff)  # no close seen by any handoff client
        assert plain.close_code == 1012, (plain.close_code, plain.close_reason)
        assert closed_after_s >= GRACE_S * 0.9, closed_after_s
        assert await asyncio.to_thread(old.wait_exit, 30) == 0
        moved = [next(t for t, pid in zip(s.times, s.pids, strict=True) if pid != old_pid) for s in sessions]
        print(
            f"replies per client: {[len(s.pids) for s in sessions]}; first reply from the new worker "
            f"{min(moved) - sigterm_at:.3f}..{max(moved) - sigterm_at:.3f}s after SIGTERM; "
            f"plain client closed 1012 after {closed_after_s:.2f}s"
        )
    finally:
        for ws in (*handoff, plain):
            await ws.close()


def test_sigterm_hands_websockets_to_the_other_worker(tmp_path: Path) -> None:
    server, backend = start_frontend(tmp_path)
    try:
        add_appserver(server, tmp_path, backend, "appserver-old")
        asyncio.run(scenario(server, tmp_path, backend))
    finally:
        stop(server)
