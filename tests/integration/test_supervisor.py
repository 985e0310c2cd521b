"""The worker pool under `zasgi run`: scaling, rolling restarts, recycling, crash restarts.

Every test drives a real supervisor with signals (or `zasgi reload`) and
watches its worker processes with psutil, while a light request loop (a few
keep-alive clients) checks that no request fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.processes import REPO, Proc, wait_gone, zasgi

from .conftest import READY_RUN, Server, stop

pytestmark = pytest.mark.integration

GRACE = ("--timeout-graceful-shutdown", "3")


# ---------------------------------------------------------------- helpers


def start_pool(tmp: Path, *extra: str, app: str = "tests.apps.probe:app", workers: int = 2) -> Server:
    probe_dir = tmp / "probe"
    probe_dir.mkdir(exist_ok=True)
    argv = zasgi("run", app, "--port", "0", "--workers", str(workers), *GRACE, *extra)
    proc = Proc("run", argv, tmp, {"PROBE_DIR": str(probe_dir)})
    server = Server("", probe_dir, [proc])
    try:
        server.url = proc.wait_for(READY_RUN, 60).group(1)
    except BaseException:
        proc.kill_tree()
        raise
    return server


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def _start(*extra: str, **kwargs: object) -> Server:
        server = start_pool(tmp_path, *extra, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield _start
    for server in started:
        stop(server)


def wait_pids(
    proc: Proc, predicate: Callable[[set[int]], bool], what: str, timeout_s: float = 60
) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = proc.worker_pids()
        if predicate(pids):
            return pids
        time.sleep(0.1)
    raise AssertionError(
        f"{what}: not within {timeout_s}s (workers {sorted(proc.worker_pids())})\n{proc.log()[-5000:]}"
    )


class Load:
    """A few keep-alive clients asking /scope in a loop; every failure is kept."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self.pids: Counter[int] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(url,), daemon=True) for _ in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, url: str) -> None:
        deadline = time.monotonic() + 110  # bounded even if the test forgets to stop it
        with httpx.Client(base_url=url, timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.get("/scope")
                    pid = response.json()["pid"] if response.status_code == 200 else None
                except Exception as exc:  # every failure counts, whatever it is
                    with self._lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    if pid is None:
                        self.failures.append(f"status {response.status_code}: {response.text[:200]}")
                    else:
                        self.ok += 1
                        self.pids[pid] += 1

    def wait_ok(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        start = self.ok
        while self.ok < start + count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.ok >= start + count, (
            f"only {self.ok - start} requests in {timeout_s}s; failures {self.failures[:5]}"
        )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)


@pytest.fixture
def loads() -> Iterator[Callable[[str], Load]]:
    started: list[Load] = []

    def _start(url: str) -> Load:
        load = Load(url)
        started.append(load)
        return load

    yield _start
    for load in started:
        load.stop()


Pools = Callable[..., Server]
Loads = Callable[[str], Load]

# ---------------------------------------------------------------- tests


def test_ttin_ttou_change_the_worker_count_while_serving(pools: Pools, loads: Loads) -> None:
    server = pools(workers=2)
    proc = server.procs[0]
    first = wait_pids(proc, lambda p: len(p) == 2, "2 workers")
    load = loads(server.url)
    load.wait_ok(20)
    proc.signal(signal.SIGTTIN)
    three = wait_pids(proc, lambda p: len(p) == 3, "SIGTTIN: 3 workers")
    (added,) = three - first
    proc.wait_for(r"SIGTTIN: added worker 2 \(3 workers\)")
    load.wait_ok(20)
    deadline = time.monotonic() + 20
    while load.pids[added] == 0 and time.monotonic() < deadline:  # the new worker takes traffic
        time.sleep(0.05)
    assert load.pids[added] > 0
    proc.signal(signal.SIGTTOU)
    assert wait_pids(proc, lambda p: len(p) == 2, "SIGTTOU: 2 workers") == first  # the newest left
    proc.signal(signal.SIGTTOU)
    wait_pids(proc, lambda p: len(p) == 1, "SIGTTOU: 1 worker")
    proc.wait_for(r"worker 1 \(pid \d+\) drained and exited")
    proc.signal(signal.SIGTTOU)
    proc.wait_for("SIGTTOU ignored: the pool keeps at least 1 worker")
    load.wait_ok(20)
    assert len(proc.worker_pids()) == 1
    load.stop()
    assert load.failures == []
    assert "Traceback" not in proc.log()


def test_sighup_and_zasgi_reload_replace_every_worker(pools: Pools, loads: Loads, tmp_path: Path) -> None:
    pid_file = tmp_path / "zasgi.pid"
    server = pools("--pid-file", str(pid_file), workers=2)
    proc = server.procs[0]
    assert pid_file.read_text() == f"{proc.pid}\n"
    old = wait_pids(proc, lambda p: len(p) == 2, "2 workers")
    load = loads(server.url)
    load.wait_ok(20)
    started = time.monotonic()
    proc.signal(signal.SIGHUP)
    new = wait_pids(proc, lambda p: not (p & old) and len(p) == 2, "roll 1 (SIGHUP)")
    took = time.monotonic() - started
    proc.wait_for(r"reload complete: 2 worker\(s\) replaced")
    load.wait_ok(20)
    assert set(load.pids) & new  # the new workers serve

    done = subprocess.run(zasgi("reload", "--pid-file", str(pid_file)), cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"reload complete (pid {proc.pid}): 2 worker(s) replaced" in done.stdout  # it waited
    wait_pids(proc, lambda p: not (p & new) and len(p) == 2, "roll 2 (zasgi reload)")
    load.wait_ok(20)
    load.stop()
    print(f"roll of 2 workers: {took:.1f}s; {load.ok} requests, {len(load.pids)} worker pids served")
    assert load.failures == []
    assert "Traceback" not in proc.log()

    proc.signal(signal.SIGTERM)
    assert proc.wait_exit(30) == 0
    assert not pid_file.exists()  # removed at exit
    done = subprocess.run(zasgi("reload", "--pid-file", str(pid_file)), cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("zasgi reload: no pid file at")


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        ([], None, "no pid file: pass --pid-file PATH or set ZASGI_PID_FILE"),
        (["--pid-file", "{path}"], "not a pid\n", "does not hold a process id"),
        (["--pid-file", "{path}"], "1\n", "stale pid file"),  # nobody holds its lock (pid 1 is init)
    ],
)
def test_zasgi_reload_errors_are_one_line(
    tmp_path: Path, args: list[str], content: str | None, message: str
) -> None:
    path = tmp_path / "zasgi.pid"
    if content is not None:
        path.write_text(content)
    argv = zasgi("reload", *(a.format(path=path) for a in args))
    env = {k: v for k, v in os.environ.items() if k != "ZASGI_PID_FILE"}
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_second_supervisor_on_the_same_pid_file_refuses(pools: Pools, tmp_path: Path) -> None:
    pid_file = tmp_path / "zasgi.pid"
    server = pools("--pid-file", str(pid_file), workers=1)
    argv = zasgi("run", "tests.apps.probe:app", "--port", "0", "--pid-file", str(pid_file))
    second = Proc("second", argv, tmp_path)
    try:
        assert second.wait_exit(60) == 3
        assert f"is held by a running zasgi (pid {server.procs[0].pid})" in second.log()
        assert pid_file.read_text() == f"{server.procs[0].pid}\n"  # untouched
    finally:
        second.kill_tree()


def test_reload_with_broken_code_keeps_the_old_workers(pools: Pools, loads: Loads, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "probeapp.py"
    shutil.copy(REPO / "tests" / "apps" / "probe.py", module)
    server = pools("--app-dir", str(app_dir), app="probeapp:app", workers=2)
    proc = server.procs[0]
    old = wait_pids(proc, lambda p: len(p) == 2, "2 workers")
    load = loads(server.url)
    load.wait_ok(20)
    good = module.read_text()
    module.write_text(good + "\ndef broken(:\n")
    proc.signal(signal.SIGHUP)
    proc.wait_for(
        r"reload failed: new worker exited with code 4 \(app could not be loaded\); "
        r"keeping the 2 running workers"
    )
    assert wait_pids(proc, lambda p: p == old, "only the old workers left") == old
    load.wait_ok(50)
    assert set(load.pids) <= old
    # Fixed code: the next reload goes through.
    module.write_text(good)
    proc.signal(signal.SIGHUP)
    wait_pids(proc, lambda p: not (p & old) and len(p) == 2, "roll with the fixed code")
    load.wait_ok(20)
    load.stop()
    assert load.failures == []
    assert proc.log().count("reload failed") == 1


def test_max_requests_recycles_workers_without_failures(pools: Pools, loads: Loads) -> None:
    server = pools("--max-requests", "100", "--max-requests-jitter", "20", workers=2)
    proc = server.procs[0]
    first = wait_pids(proc, lambda p: len(p) == 2, "2 workers")
    load = loads(server.url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.log().count("drained and exited") < 3:
        time.sleep(0.1)
    load.stop()
    log = proc.log()
    assert log.count("drained and exited") >= 3, log[-4000:]
    recycled = [
        (int(n), int(limit)) for n, limit in re.findall(r"served (\d+) requests \(limit (\d+)\)", log)
    ]
    assert len(recycled) >= 3
    assert all(100 <= limit <= 120 and n >= limit for n, limit in recycled), recycled
    assert not (proc.worker_pids() & first)
    assert load.failures == []
    assert "Traceback" not in log
    print(f"{load.ok} requests over {len(load.pids)} worker pids; recycled at (served, limit) {recycled}")


def test_killed_worker_is_restarted_and_logged(pools: Pools) -> None:
    server = pools(workers=2)
    proc = server.procs[0]
    before = wait_pids(proc, lambda p: len(p) == 2, "2 workers")
    victim = min(before)
    psutil.Process(victim).send_signal(signal.SIGKILL)
    after = wait_pids(proc, lambda p: len(p) == 2 and victim not in p, "restarted worker")
    proc.wait_for(rf"worker \d \(pid {victim}\) died: killed by SIGKILL; restarting in 0\.0s")
    (replacement,) = after - before
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=server.url, timeout=30) as client:
        seen: set[int] = set()
        while replacement not in seen and time.monotonic() < deadline:
            seen.add(client.get("/scope").json()["pid"])
    assert replacement in seen


def test_stop_during_a_roll_waits_for_the_draining_worker(pools: Pools) -> None:
    """SIGHUP while a request runs, then SIGTERM: the old worker still finishes it; nothing is left behind."""
    server = pools(workers=1)
    proc = server.procs[0]
    (old,) = wait_pids(proc, lambda p: len(p) == 1, "1 worker")
    result: dict[str, object] = {}

    def slow_request() -> None:
        try:
            result["response"] = httpx.get(server.url + "/slow?s=2&tag=inflight", timeout=30)
        except Exception as exc:
            result["response"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    try:
        server.wait_recorded("arrivals", "inflight")
        proc.signal(signal.SIGHUP)
        proc.wait_for(rf"worker 0 \(pid \d+\) ready \(reload\); pid {old} drains")
        children = proc.descendants()
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(30) == 0
    finally:
        thread.join(30)
    response = result["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200 and response.text == "slept"
    assert wait_gone(children, timeout_s=15) == []
