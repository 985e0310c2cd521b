"""``zasgi run --frontends N`` (appserver/fleet.py): several front ends on one port, every worker
joined to each, rolls (SIGUSR2 / ``zasgi reload --frontends``) that fail and refuse nothing, and the
refusals: a bad count, a port held by another program, a new front end that cannot start."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appserver.listeners import usable_cores
from tests.helpers.load import GetLoad
from tests.helpers.processes import Proc, free_tcp_port, zasgi
from tests.integration.conftest import PROBE, Server, start_run, stop

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="several front ends need SO_REUSEPORT"),
]

ROLL_DONE = "front-end roll complete"


def _shared_admin(server: Server) -> str:
    """The one admin URL the banner shows: every front end serves it (frontend/fleet_admin.py)."""
    match = re.search(r"\n  admin +(http://\S+)\n", server.procs[0].log() + "\n")
    assert match, server.logs()
    return match.group(1)


def _admins(server: Server) -> list[str]:
    """Each front end's own admin URL, as the shared endpoint's /workers lists them."""
    fleet = _get_json(f"{_shared_admin(server)}/workers")["fleet"]
    assert all("error" not in fe for fe in fleet), fleet
    return [fe["admin"] for fe in fleet]


def _get_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return json.loads(resp.read())


def _requests_served(admin: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{admin}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("zasgi_http_requests_total{"))  # fmt: skip


def _get(port: int, keep: http.client.HTTPConnection | None = None) -> int:
    conn = keep or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/", headers={} if keep else {"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        if keep is None:
            conn.close()


@pytest.fixture
def fleet2(tmp_path: Path) -> Iterator[Server]:
    pid_file = tmp_path / "run.pid"
    server = start_run(tmp_path, "--frontends", "2", "--pid-file", str(pid_file), "--admin-port", "0",
                       "--timeout-graceful-shutdown", "5", workers=2)  # fmt: skip
    server.pid_file = pid_file  # type: ignore[attr-defined]
    yield server
    stop(server)


def test_both_front_ends_get_traffic_and_every_worker_joins_each(fleet2: Server) -> None:
    admins = _admins(fleet2)
    assert len(admins) == 2
    port = fleet2.host_port[1]
    for _ in range(200):  # new connections: the kernel spreads them by source port
        assert _get(port) == 200
    served = [_requests_served(a) for a in admins]
    assert all(n > 10 for n in served), served  # both took a share (200 is never all on one by chance)
    answers = [_get_json(f"{a}/workers")["workers"] for a in admins]
    workers = [{w["pid"] for w in answer if w["state"] == "ready"} for answer in answers]
    pids = fleet2.procs[0].worker_pids()
    assert len(pids) == 2 and workers == [pids, pids]
    ids = {_get_json(f"{a}/workers")["frontend"]["id"] for a in admins}
    assert ids == {"fe0", "fe1"}
    log = fleet2.procs[0].log()
    assert re.search(r"rid=\S+ worker=\S+ dur=[\d.]+ fe=fe0$", log, re.M)  # the access log names it
    assert re.search(r"rid=\S+ worker=\S+ dur=[\d.]+ fe=fe1$", log, re.M)
    for how in (["--pid-file", str(fleet2.pid_file)], ["--admin", _shared_admin(fleet2)]):  # type: ignore[attr-defined]
        status = subprocess.run(zasgi("status", *how), capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count("front end fe") == 2, status.stdout
        assert "2 front ends: 2 of 2 ready worker(s) joined to every one" in status.stdout


def test_one_admin_port_answers_for_every_front_end(fleet2: Server) -> None:
    """The banner's admin URL is served by both front ends; whichever the kernel hands a scrape to
    answers with both one's series, labelled frontend=NAME, so sums are the host's."""
    shared = _shared_admin(fleet2)
    port = fleet2.host_port[1]
    before = _requests_served(shared)
    for _ in range(100):
        assert _get(port) == 200
    for _ in range(6):  # several connections: each front end answers some of them
        text = _text(f"{shared}/metrics")
        by_fe = _by_frontend(text, "zasgi_http_requests_total")
        assert set(by_fe) == {"fe0", "fe1"}, text[:3000]
        assert sum(by_fe.values()) == before + 100  # (admin requests are not counted)
        assert 'zasgi_frontends{answered="true"} 2.0' in text
        assert re.search(r'^zasgi_workers\{frontend="fe1",state="ready"\} 2\.0$', text, re.M), text[:3000]
    assert _text(f"{shared}/readyz").startswith("ready")
    assert _text(f"{shared}/healthz") == "ok\n"
    fleet = _get_json(f"{shared}/workers")["fleet"]
    assert [fe["frontend"]["id"] for fe in fleet] == ["fe0", "fe1"]


def test_a_stuck_front_end_is_left_out_of_the_shared_answer_not_waited_for(fleet2: Server) -> None:
    shared = _shared_admin(fleet2)
    pid = next(int(fe["frontend"]["pid"]) for fe in _get_json(f"{shared}/workers")["fleet"]
               if fe["frontend"]["id"] == "fe1")  # fmt: skip
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()  # fe0 takes the connection (fe1 accepts none while stopped)
        text = _text(f"{shared}/metrics")
        assert time.monotonic() - began < 6
        assert 'zasgi_frontends{answered="false"} 1.0' in text
        assert set(_by_frontend(text, "zasgi_workers")) == {"fe0"}
        status = subprocess.run(zasgi("status", "--admin", shared), capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        assert status.returncode == 1 and status.stdout.count("front end fe") == 1, status.stdout
        assert "cannot read http://" in status.stderr and "no answer in 2 s" in status.stderr, status.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while 'zasgi_frontends{answered="true"} 2.0' not in _text(f"{shared}/metrics"):
        assert time.monotonic() < deadline, "fe1 never answered again"
        time.sleep(0.2)


def _text(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return resp.read().decode()  # type: ignore[no-any-return]


def _by_frontend(text: str, name: str) -> dict[str, float]:
    """``name``'s samples summed per frontend label."""
    out: dict[str, float] = {}
    for fe, value in re.findall(rf'^{name}\{{frontend="([^"]+)"[^}}]*\}} (\S+)$', text, re.M):
        out[fe] = out.get(fe, 0.0) + float(value)
    return out


def test_rolls_under_keep_alive_load_fail_and_refuse_nothing(fleet2: Server) -> None:
    port = fleet2.host_port[1]
    proc = fleet2.procs[0]
    with GetLoad(port, [i % 3 != 0 for i in range(6)]) as load:
        time.sleep(1.0)
        for roll in range(2):
            reload = subprocess.run(zasgi("reload", "--frontends", "--pid-file", str(fleet2.pid_file)),  # type: ignore[attr-defined]
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            assert reload.returncode == 0 and "SIGUSR2" in reload.stdout, reload.stderr
            _wait_count(proc, ROLL_DONE, roll + 1, 60)
            _wait_count(proc, "retired and exited", 2 * (roll + 1), 60)  # the old ones drained
            time.sleep(0.5)
    assert load.failed == 0, (load.counts, load.errors[:5])
    assert load.ok > 200
    assert "front-end roll stopped" not in proc.log()
    assert len(_admins(fleet2)) == 2 and _get(port) == 200
    fleet = _get_json(f"{_shared_admin(fleet2)}/workers")["fleet"]
    assert [fe["frontend"]["id"] for fe in fleet] == ["fe0.3", "fe1.4"]  # the shared port: the new ones


def _wait_count(proc: Proc, text: str, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while proc.log().count(text) < n:
        if time.monotonic() > deadline:
            seen = proc.log().count(text)
            raise AssertionError(f"{text!r} seen {seen} times, not {n}:\n{proc.log()[-5000:]}")
        time.sleep(0.1)


def test_a_new_front_end_that_cannot_start_stops_the_roll_and_the_old_ones_serve(tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    shutil.copy(_self_signed(tmp_path), cert)
    proc = Proc("run", zasgi("run", PROBE, "--port", "0", "--frontends", "2", "--ssl-certfile", str(cert),
                             "--admin-port", "0", "--workers", "1"), tmp_path)  # fmt: skip
    server = Server("", tmp_path, [proc])
    try:
        server.url = proc.wait_for(r"zasgi running on https://(\S+)", 60).group(1)
        cert.write_text("not a certificate\n")  # the next front end cannot start with it
        proc.signal(signal.SIGUSR2)
        _wait_count(proc, "front-end roll stopped", 1, 60)
        stopped = (
            r"front-end roll stopped: front end fe0\.1 \(pid \d+\) exited with code \d+ before it "
            r"was ready; the running front ends keep serving"
        )
        assert re.search(stopped, proc.log()), proc.log()[-3000:]
        host, port = server.url.rsplit(":", 1)
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        for _ in range(10):
            conn = http.client.HTTPSConnection(host, int(port), timeout=30, context=ctx)
            conn.request("GET", "/", headers={"Connection": "close"})
            assert conn.getresponse().status == 200
            conn.close()
        assert proc.popen.poll() is None
    finally:
        stop(server)


def _self_signed(tmp_path: Path) -> Path:
    pem = tmp_path / "generated.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-days", "1", "-keyout", str(pem), "-out", str(pem)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return pem


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--frontends", "0"], 2, "zasgi run: --frontends 0: at least 1 front end is needed"),
        (["--frontends", "999"], 2, "more front ends than the"),
        (["--frontends", "2", "--backend", "tcp://127.0.0.1:7999"], 2, "each need a backend of their own"),
    ],
)
def test_bad_frontend_counts_are_one_line_and_non_zero(args: list[str], code: int, words: str) -> None:
    argv = zasgi("run", PROBE, "--port", "0", *args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert words in result.stderr and (len(lines) == 1 or lines[-1].startswith("Error:")), result.stderr


def test_an_admin_port_given_and_held_by_another_program_is_one_line() -> None:
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    port = other.getsockname()[1]
    try:
        argv = zasgi("run", PROBE, "--port", "0", "--frontends", "2", "--admin-port", str(port))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 3, result.stderr
        taken = "Address already in use by another program"
        assert result.stderr.strip() == f"zasgi: cannot listen on 127.0.0.1:{port} (admin endpoint): {taken}"
    finally:
        other.close()


def test_a_port_held_by_another_program_is_one_line(tmp_path: Path) -> None:
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # it would share: we must not
    other.bind(("127.0.0.1", 0))
    other.listen()
    port = other.getsockname()[1]
    try:
        for count in ("1", "2"):
            result = subprocess.run(zasgi("run", PROBE, "--port", str(port), "--frontends", count),
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            assert result.returncode == 3, result.stderr
            taken = f"zasgi: cannot listen on 127.0.0.1:{port}: Address already in use by another program"
            assert result.stderr.strip() == taken
    finally:
        other.close()


def test_several_front_ends_on_a_unix_socket_are_refused(tmp_path: Path) -> None:
    """--uds: the one front end binds it itself (listen.py), so a second could not share it."""
    argv = zasgi("run", PROBE, "--uds", str(tmp_path / "s.sock"), "--frontends", "2", "--force")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "zasgi run: --frontends 2: a --uds socket has one front end"


def test_frontends_from_the_environment_and_the_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "zasgi.toml"
    toml.write_text("[run]\nfrontends = 0\n")
    result = subprocess.run(zasgi("run", PROBE, "--port", "0", "--config", str(toml)),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "--frontends 0" in result.stderr
    result = subprocess.run(zasgi("run", PROBE, "--port", "0"), capture_output=True, text=True, timeout=60,
                            env={**os.environ, "ZASGI_FRONTENDS": "0"})  # fmt: skip
    assert result.returncode == 2 and "--frontends 0" in result.stderr


def test_split_front_ends_share_a_port_with_reuse_port(tmp_path: Path) -> None:
    """``zasgi frontend --reuse-port`` (systemd instances, host-network containers): two front ends
    on one port; without the option the second one stops with one line."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ipc = Path(tempfile.mkdtemp(prefix="zfl-"))
    procs = []
    try:
        for i in (0, 1):
            proc = Proc(f"fe{i}", zasgi("frontend", "--port", str(port), "--reuse-port", "--backend",
                                        f"ipc://{ipc}/fe{i}.sock", "--admin-port", "0", "--name", f"fe{i}"),
                        tmp_path)  # fmt: skip
            procs.append(proc)
            proc.wait_for(rf"zasgi-ready frontend http://127.0.0.1:{port} ", 60)
        lone = subprocess.run(zasgi("frontend", "--port", str(port), "--backend", f"ipc://{ipc}/fe2.sock",
                                    "--no-admin"), capture_output=True, text=True, timeout=60)  # fmt: skip
        assert lone.returncode == 3, lone.stderr  # (a boot error: listen.py)
        wanted = f"frontend: error: cannot listen on 127.0.0.1:{port}: Address already in use"
        assert lone.stderr.strip() == wanted, lone.stderr
        assert len(lone.stderr.strip().splitlines()) == 1
    finally:
        for proc in procs:
            proc.kill_tree()


def test_split_front_end_on_an_inherited_socket(tmp_path: Path) -> None:
    """``zasgi frontend --fd N`` (systemd socket activation: the socket, and its accept queue,
    outlive a restart of the service)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    ipc = Path(tempfile.mkdtemp(prefix="zfl-"))
    proc = Proc("fe", zasgi("frontend", "--fd", str(sock.fileno()), "--backend", f"ipc://{ipc}/fe.sock",
                            "--no-admin"), tmp_path, pass_fds=(sock.fileno(),))  # fmt: skip
    workers = Proc("workers", zasgi("appserver", PROBE, "--connect", f"ipc://{ipc}/fe.sock"), tmp_path)
    try:
        proc.wait_for(rf"zasgi-ready frontend http://127.0.0.1:{port} ", 60)
        workers.wait_for(r"zasgi appserver ready", 60)
        assert _get(port) == 200
        bad = subprocess.run(zasgi("frontend", "--fd", "999", "--no-admin"), capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        assert bad.returncode == 2 and "--fd 999: Bad file descriptor" in bad.stderr, bad.stderr
    finally:
        workers.kill_tree()
        proc.kill_tree()
        sock.close()


def test_a_front_end_that_dies_is_replaced_and_its_queue_waits_for_the_new_one(fleet2: Server) -> None:
    proc = fleet2.procs[0]
    port = fleet2.host_port[1]
    victim = int(re.search(r"front end fe0 started \(pid (\d+)\)", proc.log()).group(1))  # type: ignore[union-attr]
    os.kill(victim, signal.SIGKILL)
    # New connections meanwhile: those the kernel gives fe0's socket wait in its queue (the
    # supervisor holds the socket) until the replacement accepts them; none is refused.
    statuses = [_get(port) for _ in range(60)]
    assert statuses == [200] * 60
    _wait_count(proc, "in place of the one that exited", 1, 60)
    assert re.search(rf"front end fe0 \(pid {victim}\) exited with code -9; starting a new one", proc.log())
    assert proc.popen.poll() is None
    assert [_get(port) for _ in range(20)] == [200] * 20


async def test_a_websocket_on_a_rolled_front_end_closes_1012_and_reconnects(fleet2: Server) -> None:
    url = fleet2.url.replace("http://", "ws://") + "/ws/echo"
    proc = fleet2.procs[0]
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url) for _ in range(4)]  # on either front end
        proc.signal(signal.SIGUSR2)
        began = time.monotonic()
        for ws in sockets:
            await ws.send_str("during the roll")
            assert (await ws.receive(timeout=30)).data == "during the roll"  # still served meanwhile
        for ws in sockets:
            message = await ws.receive(timeout=60)
            assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 1012, message
        assert time.monotonic() - began >= 3.0  # at the end of the 5 s grace, not at once
        again = await session.ws_connect(url)
        await again.send_str("hi")
        assert (await again.receive(timeout=30)).data == "hi"
        await again.close()
    await asyncio.to_thread(_wait_count, proc, ROLL_DONE, 1, 60)


@pytest.mark.skipif(usable_cores() < 2, reason="auto gives one front end per core")
def test_auto_is_the_default_one_front_end_per_worker_and_both_serve(tmp_path: Path) -> None:
    """--frontends auto, the default: ``zasgi run -w 2`` puts HTTP on two cores, as ``uvicorn
    --workers 2`` does (listeners.auto_count); every connection is answered whichever front end the
    kernel picks."""
    argv = zasgi("run", PROBE, "--port", "0", "--workers", "2", "--admin-port", "0")
    proc = Proc("run", argv, tmp_path, {"PROBE_DIR": str(tmp_path)})
    server = Server("", tmp_path, [proc])
    try:
        server.url = proc.wait_for(r"zasgi running on (http://\S+) \(2 front ends, 2 workers\)", 60).group(1)
        port = int(server.url.rsplit(":", 1)[1].rstrip("/"))
        assert all(_get(port) == 200 for _ in range(40))
        admins = _admins(server)
        assert len(admins) == 2
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(_requests_served(a) > 0 for a in admins):
            _get(port)
        assert all(_requests_served(a) > 0 for a in admins), "SO_REUSEPORT left a front end without traffic"
    finally:
        stop(server)


def test_auto_with_a_tcp_backend_is_one_front_end(tmp_path: Path) -> None:
    """A fixed tcp:// backend can be bound by one front end only: auto gives 1, not a refusal."""
    backend = f"tcp://127.0.0.1:{free_tcp_port()}"
    argv = zasgi("run", PROBE, "--port", "0", "--workers", "2", "--backend", backend, "--frontends", "auto")
    proc = Proc("run", argv, tmp_path, {"PROBE_DIR": str(tmp_path)})
    server = Server("", tmp_path, [proc])
    try:
        line = proc.wait_for(r"zasgi running on http://\S+ \(.*\)", 60).group(0)
        assert line.endswith("(2 workers)"), line
        port = int(re.search(r"http://[^:]+:(\d+)", line).group(1))  # type: ignore[union-attr]
        assert _get(port) == 200
    finally:
        stop(server)
