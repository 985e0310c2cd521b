"""Process supervision: the worker pool, and for ``zasgi run`` the front end too.

The supervisor is synchronous and small on purpose (gunicorn's arbiter): it
spawns, waits on process sentinels and a signal self-pipe, and restarts. All
request work happens in the children.

* Workers are ``multiprocessing`` spawn children running ``run_worker``; each
  reports readiness (welcomed by every front end) through an Event.
* Children run in their own process group, so a terminal's Ctrl-C reaches only
  the supervisor, which then stops them in order: front end first (it finishes
  its in-flight requests, which need the workers), then the workers (they drain
  and run lifespan shutdown). Children watch the supervisor and leave by
  themselves if it dies, so nothing is orphaned.
* A worker that exits with EXIT_APP_LOAD or EXIT_BOOT before it was ever
  ready stops the whole pool with that code: restarting would only repeat
  the failure. A worker that dies later is restarted with back-off.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import wait
from typing import Any

from .config import WorkerConfig

log = logging.getLogger("zasgi.supervisor")

EXIT_OK, EXIT_ERROR, EXIT_BOOT, EXIT_APP_LOAD = 0, 1, 3, 4
RESTART_BACKOFF_MAX_S = 10.0
_MP = multiprocessing.get_context("spawn")


def _worker_entry(config: WorkerConfig, ready: Any) -> None:
    """Body of a worker process (spawned, so it imports the app fresh)."""
    os.setpgrp()
    from .worker import run_worker

    parent = multiprocessing.parent_process()
    code = run_worker(config, ready=ready.set, parent_fd=parent.sentinel if parent else None)
    sys.exit(code)


class PoolState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass
class WorkerSlot:
    index: int
    process: Any = None
    ready: Any = None
    restarts: int = 0
    was_ready: bool = False
    started_at: float = 0.0
    restart_at: float = 0.0


@dataclass
class Supervisor:
    """N workers (and optionally one front-end subprocess) under one signal loop."""

    config: WorkerConfig
    workers: int
    frontend_argv: Sequence[str] | None = None
    graceful_timeout_s: float = 30.0
    state: PoolState = PoolState.STARTING
    slots: list[WorkerSlot] = field(default_factory=list)
    frontend: subprocess.Popen[bytes] | None = None
    _signal_r: int = -1
    _stop_signal: int | None = None

    # ------------------------------------------------------------ signals

    def install_signals(self) -> None:
        self._signal_r, signal_w = os.pipe()
        os.set_blocking(signal_w, False)
        signal.set_wakeup_fd(signal_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only record: the loop acts on it (a second one forces the stop).
        self._stop_signal = signum if self._stop_signal is None else -1

    # ------------------------------------------------------------ front end

    def start_frontend(self, timeout_s: float = 30.0) -> str:
        """Start ``python -m frontend`` and return its ready line's URL."""
        assert self.frontend_argv is not None
        ready_r, ready_w = os.pipe()
        parent_r, self._parent_w = os.pipe()
        argv = [sys.executable, "-m", "frontend", *self.frontend_argv,
                "--ready-fd", str(ready_w), "--parent-fd", str(parent_r)]  # fmt: skip
        self.frontend = subprocess.Popen(
            argv, pass_fds=(ready_w, parent_r), stdout=sys.stderr, start_new_session=True
        )
        os.close(ready_w)
        os.close(parent_r)
        try:
            line = self._read_line(ready_r, timeout_s)
        finally:
            os.close(ready_r)
        if not line:
            code = self.frontend.poll()
            raise SupervisorError(f"front end did not start (exit code {code})", code or EXIT_BOOT)
        return line

    def _read_line(self, fd: int, timeout_s: float) -> str:
        deadline, data = time.monotonic() + timeout_s, b""
        while b"\n" not in data and time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], min(0.2, max(deadline - time.monotonic(), 0)))
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
            elif self._stop_signal is not None:
                break
        return data.decode(errors="replace").strip()

    # ------------------------------------------------------------ workers

    def start_workers(self) -> None:
        self.slots = [WorkerSlot(index=i) for i in range(self.workers)]
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.ready = _MP.Event()
        slot.process = _MP.Process(
            target=_worker_entry, args=(self.config, slot.ready), name=f"zasgi-worker-{slot.index}"
        )
        slot.process.start()
        slot.started_at = time.monotonic()
        slot.was_ready = False
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until every worker is ready. Raises SupervisorError on a boot failure."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not all(slot.ready.is_set() for slot in self.slots):
            if self._stop_signal is not None:
                raise SupervisorError("interrupted while starting", EXIT_OK)
            if deadline is not None and time.monotonic() > deadline:
                raise SupervisorError("workers did not become ready in time", EXIT_BOOT)
            for slot in self.slots:
                code = slot.process.exitcode
                if code is not None and not slot.ready.is_set():
                    raise SupervisorError(f"worker {slot.index} exited with code {code} while starting",
                                          code if code in (EXIT_BOOT, EXIT_APP_LOAD) else EXIT_BOOT)  # fmt: skip
            self._wait_events(0.05)
        for slot in self.slots:
            slot.was_ready = True
        self.state = PoolState.RUNNING

    def _wait_events(self, timeout_s: float) -> None:
        handles: list[Any] = [s.process.sentinel for s in self.slots if s.process is not None]
        if self._signal_r >= 0:
            handles.append(self._signal_r)
        for handle in wait(handles, timeout=timeout_s):
            if handle == self._signal_r:
                os.read(self._signal_r, 512)

    # ------------------------------------------------------------ running

    def run(self) -> int:
        """Supervise until a stop signal, the front end exits, or a boot failure."""
        while self._stop_signal is None:
            self._wait_events(0.5)
            if self.frontend is not None and self.frontend.poll() is not None:
                log.error("front end exited with code %s", self.frontend.returncode)
                return self.stop() or EXIT_ERROR
            for slot in self.slots:
                self._check_worker(slot)
        return self.stop()

    def _check_worker(self, slot: WorkerSlot) -> None:
        if slot.process is None:
            if time.monotonic() >= slot.restart_at:
                self._spawn(slot)
            return
        if slot.ready.is_set():
            slot.was_ready = True
        code = slot.process.exitcode
        if code is None:
            return
        slot.process = None
        # Back off only while the worker keeps dying before it is ready.
        slot.restarts = 0 if slot.was_ready else slot.restarts + 1
        delay = min(RESTART_BACKOFF_MAX_S, 0.5 * 2**slot.restarts) if slot.restarts else 0.0
        slot.restart_at = time.monotonic() + delay
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        log.warning("worker %d died (%s); restarting in %.1fs", slot.index, how, delay)

    def stop(self) -> int:
        """Front end first (it finishes in-flight requests), then workers drain."""
        self.state = PoolState.STOPPING
        force = self._stop_signal == -1
        grace = 0.0 if force else self.graceful_timeout_s + 5
        if self.frontend is not None and self.frontend.poll() is None:
            self.frontend.send_signal(signal.SIGKILL if force else signal.SIGTERM)
            try:
                self.frontend.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("front end did not stop in %.0fs; killing it", grace)
                self.frontend.kill()
                self.frontend.wait()
        live = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in live:
            process.kill() if force else process.terminate()
        deadline = time.monotonic() + grace
        for process in live:
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.join(5)
        return EXIT_OK


class SupervisorError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
