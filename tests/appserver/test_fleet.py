"""frontroll.py's table, listeners.py (--frontends checks, the port bound once), fleet.py's reports."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import pytest

from appserver.fleet import Fleet, FrontendProc
from appserver.frontroll import FE_TRANSITIONS, ROLL_TRANSITIONS, FeState, Roll, RollPhase
from appserver.listeners import FleetError, auto_count, bind_admin, bind_listeners, check_count, usable_cores

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading is Linux's"
)


@pytest.mark.parametrize(
    ("count", "kw", "words"),
    [
        (0, {}, "at least 1 front end"),
        (-2, {}, "at least 1 front end"),
        (3, {"cores": 2}, "more front ends than the 2 CPU core"),
        (2, {"platform": "darwin", "cores": 8}, "need Linux"),
    ],
)
def test_bad_frontend_counts_are_one_line(count: int, kw: dict[str, object], words: str) -> None:
    with pytest.raises(FleetError, match=words) as caught:
        check_count(count, **kw)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_good_frontend_counts() -> None:
    check_count(1, platform="darwin")
    check_count(2, cores=2, platform="linux")
    check_count(8, cores=2, platform="linux", force=True)


@pytest.mark.parametrize(
    ("workers", "kw", "count"),
    [
        (1, {"cores": 8}, 1),
        (2, {"cores": 2}, 2),  # uvicorn --workers 2 has HTTP on two cores; so does run -w 2 --frontends auto
        (8, {"cores": 2}, 2),  # never more than the cores
        (4, {"cores": 8}, 4),
        (4, {"cores": 8, "single": True}, 1),  # --uds, a fixed tcp:// backend
        (4, {"cores": 8, "platform": "darwin"}, 1),  # no SO_REUSEPORT spreading
        (0, {"cores": 8}, 1),
    ],
)
def test_auto_frontends_one_per_worker_at_most_one_per_core(workers: int, kw: dict[str, object], count: int) -> None:
    kw.setdefault("platform", "linux")
    assert auto_count(workers, **kw) == count  # type: ignore[arg-type]
    check_count(count, cores=kw["cores"], platform=kw["platform"])  # type: ignore[arg-type]  # never refused


def test_roll_phases_only_move_forward_and_end() -> None:
    order = list(RollPhase)
    for old, news in ROLL_TRANSITIONS.items():
        assert all(order.index(new) > order.index(old) for new in news)
    roll = Roll(0, new=None)  # type: ignore[arg-type]
    roll.to(RollPhase.JOINING)
    with pytest.raises(ValueError, match="joining -> starting"):
        roll.to(RollPhase.STARTING)
    roll.to(RollPhase.FAILED)
    assert ROLL_TRANSITIONS[RollPhase.FAILED] == frozenset()
    states = list(FeState)
    for old_state, new_states in FE_TRANSITIONS.items():
        assert all(states.index(new) > states.index(old_state) for new in new_states)


@linux_only
def test_listeners_share_one_port_and_refuse_a_port_held_by_another_program() -> None:
    socks = bind_listeners("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1 and all(s.get_inheritable() for s in socks)
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        port = ports.pop()
    finally:
        for s in socks:
            s.close()
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that would share
    other.bind(("127.0.0.1", port))
    other.listen()
    try:
        for count in (1, 2):
            taken = f"cannot listen on 127.0.0.1:{port}: Address already in use by another program"
            with pytest.raises(FleetError, match=taken):
                bind_listeners("127.0.0.1", port, count)
        admin = f"cannot listen on 127.0.0.1:{port} (admin endpoint): Address already in use by another"
        with pytest.raises(FleetError, match=re.escape(admin)):
            bind_admin("127.0.0.1", port)
    finally:
        other.close()


def test_the_shared_admin_socket_listens_at_once_on_the_port_asked() -> None:
    sock = bind_admin("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)  # a probe queues before any front end
        assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)  # one socket, shared by fd
        assert sock.get_inheritable()
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [
        ("max 100000\n", 64),  # no quota: the affinity mask
        ("150000 100000\n", 2),  # docker run --cpus 1.5
        ("50000 100000\n", 1),  # half a core: still one
        ("800000 100000\n", 8),  # eight cores of quota on a 64-core host
        ("8000000 100000\n", 64),  # a quota above the mask: the mask
        ("garbage", 64),
        (None, 64),  # no cgroup v2 file
    ],
)
def test_usable_cores_follow_a_cgroup_cpu_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str | None, cores: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert usable_cores(str(path)) == cores


def test_one_listener_needs_no_reuse_port() -> None:
    (sock,) = bind_listeners("127.0.0.1", 0, 1)
    try:
        assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    finally:
        sock.close()


def test_reports_are_read_line_by_line_across_writes() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    proc = FrontendProc(0, 0, "fe0", "ipc:///x", popen=None, report_fd=r, started_at=0.0)  # type: ignore[arg-type]
    os.write(w, b"zasgi-ready frontend http://127.0.0.1:8000 backend=ipc:///x adm")
    proc.read_reports()
    assert not proc.ready
    os.write(w, b"in=http://127.0.0.1:9000\nzasgi-workers \nzasgi-workers 12 34")
    proc.read_reports()
    assert proc.url == "http://127.0.0.1:8000" and proc.facts == {
        "backend": "ipc:///x",
        "admin": "http://127.0.0.1:9000",
    }
    assert proc.workers == frozenset()
    os.write(w, b"\n")
    os.close(w)
    proc.read_reports()
    assert proc.workers == {12, 34} and proc.report_fd == -1  # EOF: it exited


def test_a_defaulted_shared_admin_port_found_taken_leaves_each_front_end_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    port = other.getsockname()[1]
    try:
        for required in (False, True):
            fleet = Fleet(argv=[], address=("127.0.0.1", 0), count=2, endpoint_base="ipc:///nowhere",
                          list_path=str(tmp_path / "list"),
                          shared_admin=("127.0.0.1", port, required))  # fmt: skip
            if required:  # --admin-port given: the run stops, one line (exit 3)
                with pytest.raises(FleetError, match="admin endpoint"):
                    fleet._bind_admin()
            else:
                fleet._bind_admin()
                assert fleet.admin_socket is None and fleet.admin_url is None
                assert "each front end's own admin endpoint only" in caplog.text
    finally:
        other.close()
    fleet = Fleet(argv=[], address=("127.0.0.1", 0), count=2, endpoint_base="ipc:///nowhere",
                  list_path=str(tmp_path / "list"), shared_admin=("127.0.0.1", 0, False))  # fmt: skip
    fleet._bind_admin()
    try:
        sock = fleet.admin_socket
        assert sock is not None and fleet.admin_url == f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        fleet.admin_socket.close()  # type: ignore[union-attr]
