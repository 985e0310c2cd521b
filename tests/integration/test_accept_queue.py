"""Front-end rolls lose nothing queued: front ends share one listening socket, inherited from the
process that bound it (server.py says why), so a retiring front end that stops accepting leaves
the connections waiting in the accept queue to its successor. Real processes: two front ends on
one inherited socket, one real worker joined to both."""

from __future__ import annotations

import http.client
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.load import GetLoad
from tests.helpers.processes import Proc, zasgi

pytestmark = pytest.mark.timeout(120)

QUEUED = 50  # connections that wait in the accept queue while nobody accepts


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    ipc = Path(tempfile.mkdtemp(prefix="zaq-"))  # short: ipc paths are limited to ~100 bytes
    yield sock, ipc
    sock.close()


class Fleet:
    def __init__(self, sock: socket.socket, ipc: Path, log_dir: Path) -> None:
        self.sock, self.ipc, self.log_dir = sock, ipc, log_dir
        self.procs: list[Proc] = []

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def frontend(self, name: str, grace_s: float = 10.0) -> Proc:
        fd = self.sock.fileno()
        argv = [sys.executable, "-m", "frontend", "--fd", str(fd), "--backend", self.endpoint(name),
                "--shutdown-timeout", str(grace_s), "--no-access-log", "--no-admin", "--heartbeat-ms", "200",
                "--liveness", "5"]  # fmt: skip
        proc = Proc(name, argv, self.log_dir, pass_fds=(fd,))
        self.procs.append(proc)
        proc.wait_for(r"zasgi-ready frontend", 30)
        return proc

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.ipc}/{name}.sock"

    def workers(self, *names: str) -> Proc:
        connect = [arg for name in names for arg in ("--connect", self.endpoint(name))]
        proc = Proc("workers", zasgi("appserver", "tests.apps.probe:app", "-w", "1", *connect,
                                     "--no-sched-batch"), self.log_dir)  # fmt: skip
        self.procs.append(proc)
        proc.wait_for(r"zasgi appserver ready", 60)
        return proc


@pytest.fixture
def fleet(shared: tuple[socket.socket, Path], tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(shared[0], shared[1], tmp_path)
    yield f
    for proc in reversed(f.procs):
        proc.signal(signal.SIGCONT)
        proc.kill_tree(grace_s=5)


def _get(port: int, path: str = "/", timeout_s: float = 30.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_connections_queued_when_a_front_end_stops_accepting_go_to_its_successor(fleet: Fleet) -> None:
    a, b = fleet.frontend("a"), fleet.frontend("b")
    fleet.workers("a", "b")
    assert _get(fleet.port) == 200
    b.signal(signal.SIGSTOP)  # nobody accepts once a stops
    a.signal(signal.SIGUSR1)
    a.wait_for(r"retiring \(a successor serves", 10)
    time.sleep(0.3)  # past stop_listening(), which follows that line at once
    clients = []
    for i in range(QUEUED):  # each lands in the accept queue (the handshake is the kernel's)
        c = socket.create_connection(("127.0.0.1", fleet.port), timeout=30)
        c.sendall(b"GET /?n=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
        clients.append(c)
    assert a.wait_exit(20) == 0  # a closed its copy of the listener with all of them queued
    b.signal(signal.SIGCONT)
    answers = []
    for c in clients:
        data = b""
        while chunk := c.recv(65536):
            data += chunk
        c.close()
        answers.append(data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.1 ") else data[:40])
    assert answers == [b"200"] * QUEUED


def test_a_front_end_retiring_under_keep_alive_load_fails_nothing(fleet: Fleet) -> None:
    """Clients keep requesting, over keep-alive connections and new ones, while one of the two
    front ends retires: every request is answered 200 (by it, or by the one left)."""
    a, _ = fleet.frontend("a"), fleet.frontend("b")
    fleet.workers("a", "b")
    with GetLoad(fleet.port, [i % 2 == 0 for i in range(6)]) as load:
        time.sleep(1.5)
        before = load.ok
        a.signal(signal.SIGUSR1)
        assert a.wait_exit(30) == 0
        time.sleep(1.5)
    assert load.failed == 0, (load.counts, load.errors[:5])
    assert before > 20 and load.ok > before + 20
