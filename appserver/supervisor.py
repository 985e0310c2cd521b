"""Process supervision: the worker pool, and for ``zasgi run`` the front ends too.

The supervisor is synchronous and small on purpose (gunicorn's arbiter): one
loop waits (bounded) on process sentinels and a signal self-pipe, then polls
explicit states. Nothing in the loop blocks, so signals and deaths are seen
during a rolling restart too. All request work happens in the children.

The pool is a list of *slots* (worker 0..N-1). A slot has a ``current``
process and, while it is being replaced, a ``successor``; a process told to
leave moves to ``draining`` and stays supervised until it exits::

    STARTING --ready (welcomed by every front end)--> SERVING --SIGTERM--> DRAINING --exit--> gone

* Replacement is always new-first: the successor is spawned (fresh, spawn
  context: it imports the app's current code), and only once it is ready the
  old process is *retired* (SIGUSR1, worker.RETIRE_SIGNAL); it drains by
  itself (DRAIN, in-flight streams finish, lifespan shutdown, BYE) and nobody
  waits for it but the loop. A retired worker left with only WebSocket
  sessions and responses already started *lingers*, serving just those until
  they end or ``--timeout-stream-drain`` passes (worker.py). At most
  ``max_lingering`` retired workers are kept at once: past that, the oldest
  (lowest generation: each rolling restart is one) gets SIGTERM, which closes
  its sessions with 1012 at once. Stopping the pool SIGTERMs every worker,
  lingering ones included, so everything still ends within the graceful
  timeout.
* Why a successor starts: a rolling restart (SIGHUP / ``zasgi reload``, or
  ``--reload``: a watcher thread (``reload.Reloader``) queues the same
  request and wakes the loop through the signal pipe; planned by
  ``control.RollPlan``, ``max_surge`` at a time), or recycling
  (``--max-requests``: the worker counts finished HTTP requests in shared
  memory, the loop compares with the worker's jittered limit; at most
  ``max_surge`` recycle at once, the others serve on meanwhile). A roll whose
  new worker exits before ready, or is not ready within
  ``worker_start_timeout_s``, stops: the old workers keep serving. (That
  timeout is for replacements only: at boot and after a crash there is no
  older worker to fall back on, so a worker may wait for its front ends.)
* A current process that dies is restarted with back-off (only while it
  keeps dying before ready). SIGTTIN / SIGTTOU add / drain the newest slot.
* Children run in their own process group, so a terminal's Ctrl-C reaches
  only the supervisor, which stops them in order: front end first (it
  finishes its in-flight requests, which need the workers), then the workers
  (they drain and run lifespan shutdown). Children watch the supervisor and
  leave by themselves if it dies, so nothing is orphaned.
* At boot, a worker that exits with EXIT_APP_LOAD or EXIT_BOOT before it was
  ever ready stops the whole pool with that code: restarting would only
  repeat the failure.
* ``zasgi run``'s front ends are a ``fleet.Fleet``: N processes on one port,
  started before the workers, stopped before them; SIGUSR2 rolls them one at
  a time (fleet.py), reported by the same loop.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import wait
from typing import Any

from wire import shm

from .config import PoolConfig, WorkerConfig
from .control import (
    EXIT_APP_LOAD,
    EXIT_BOOT,
    FRONTEND_ROLL_SIGNAL,
    RETIRE_SIGNAL,
    RollPlan,
    describe_exit,
    request_limit,
    restart_delay,
    rss_mib,
    write_reload_result,
)
from .fleet import Fleet, FleetError
from .reload import ReloadConfig, Reloader, no_bytecode_for_workers

log = logging.getLogger("zasgi.supervisor")

EXIT_OK, EXIT_ERROR = 0, 1
DRAIN_MARGIN_S = 10.0  # beyond the graceful timeout: lifespan shutdown, WebSocket close grace, BYE
POLL_BUSY_S, POLL_IDLE_S = 0.1, 0.5  # loop wake-up while something is starting / otherwise
RSS_CHECK_S = 5.0  # --max-worker-rss: how often each serving worker's resident memory is read
_MP = multiprocessing.get_context("spawn")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_CONTROL_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, FRONTEND_ROLL_SIGNAL)


def _worker_entry(config: WorkerConfig, ready: Any, served: Any) -> None:
    """Body of a worker process (spawned, so it imports the app fresh)."""
    os.setpgrp()
    from .worker import run_worker

    parent = multiprocessing.parent_process()
    code = run_worker(config, ready=ready.set, parent_fd=parent.sentinel if parent else None, served=served)
    sys.exit(code)


class PoolState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Phase(Enum):
    STARTING = "starting"  # spawned, not yet welcomed by every front end
    SERVING = "serving"
    DRAINING = "draining"  # told to leave (SIGTERM); supervised until it exits


class Why(Enum):
    """Why a successor is starting."""

    RELOAD = "reload"
    RECYCLE = "max-requests"
    MEMORY = "max-worker-rss"


@dataclass(eq=False)
class WorkerProc:
    index: int
    pid: int
    process: Any  # multiprocessing.Process (spawn); closed once it has exited
    ready: Any  # multiprocessing.Event, set once every front end welcomed it
    served: Any  # shared unsigned counter of finished HTTP requests, or None
    limit: int  # recycle at this many requests; 0 = never
    started_at: float
    why: Why | None = None
    generation: int = 0  # rolling restarts before it was spawned: the oldest lingering ones go first
    phase: Phase = Phase.STARTING
    drain_deadline: float = float("inf")
    lingers: bool = False  # retired with leave to linger (SIGUSR1), not told to stop since
    retired_at: float = 0.0

    @property
    def label(self) -> str:
        return f"worker {self.index} (pid {self.pid})"

    @property
    def requests(self) -> int:
        return int(self.served.value) if self.served is not None else 0

    def exitcode(self) -> int | None:
        return self.process.exitcode  # type: ignore[no-any-return]

    def reaped(self) -> None:
        """It exited: release the process handle and any shared-memory file it left (shm.sweep)."""
        self.process.close()
        shm.sweep(self.pid)

    def poll_ready(self) -> bool:
        if self.phase is Phase.STARTING and self.ready.is_set():
            self.phase = Phase.SERVING
        return self.phase is Phase.SERVING


@dataclass(eq=False)
class Slot:
    index: int
    current: WorkerProc | None = None
    successor: WorkerProc | None = None
    failures: int = 0  # starts in a row that never became ready (back-off)
    restart_at: float = 0.0  # with no current: start one then
    retry_at: float = 0.0  # a failed recycle replacement: try again then


@dataclass
class Supervisor:
    """N worker slots (and, for ``zasgi run``, the front ends: ``fleet``) under one signal loop."""

    config: WorkerConfig
    pool: PoolConfig = field(default_factory=PoolConfig)
    fleet: Fleet | None = None  # zasgi run's front ends (fleet.py); None: workers only (appserver)
    reload: ReloadConfig | None = None  # --reload: roll when these files change
    state: PoolState = PoolState.STARTING
    slots: list[Slot] = field(default_factory=list)
    draining: list[WorkerProc] = field(default_factory=list)
    roll: RollPlan | None = None
    rng: random.Random = field(default_factory=random.Random)
    _roll_started: float = 0.0
    generation: int = 0  # rolling restarts so far
    reload_outcomes: int = 0  # rolls ended (complete or failed), the seq of PIDFILE.reload
    memory_replacements: int = 0  # workers replaced for --max-worker-rss
    _rss_check_at: float = 0.0
    _signal_r: int = -1
    _signal_w: int = -1
    _reloader: Reloader | None = None
    _stop_signal: int | None = None
    _requests: list[int] = field(default_factory=list)  # SIGHUP / SIGTTIN / SIGTTOU, in order

    @property
    def graceful_timeout_s(self) -> float:
        return self.config.graceful_timeout_s

    # ------------------------------------------------------------ signals

    def install_signals(self) -> None:
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_w, False)
        signal.set_wakeup_fd(self._signal_w)
        for sig in _STOP_SIGNALS + _CONTROL_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only record: the loop acts on it.
        if signum in _STOP_SIGNALS:
            self._stop_signal = signum if self._stop_signal is None else -1  # a second one forces
        else:
            self._requests.append(signum)

    def _on_files_changed(self, paths: list[str]) -> None:
        """Watcher thread: queue a rolling restart (as SIGHUP does) and wake the loop."""
        assert self.reload is not None
        log.info("reload: %d file(s) changed (%s); rolling restart", len(paths), self.reload.shown(paths))
        self._requests.append(signal.SIGHUP)
        if self._signal_w >= 0:
            try:
                os.write(self._signal_w, b"\0")
            except OSError:  # pipe full: the loop is awake anyway
                pass

    # ------------------------------------------------------------ front end

    def start_fleet(self) -> list[str]:
        """Start every front end of the fleet; their ready lines. Raises SupervisorError."""
        assert self.fleet is not None
        try:
            procs = self.fleet.start(stopping=lambda: self._stop_signal is not None)
        except FleetError as exc:
            if self._stop_signal is not None:
                raise SupervisorError("interrupted while starting", EXIT_OK) from None
            raise SupervisorError(str(exc), EXIT_BOOT) from None
        return [f"zasgi-ready frontend {p.url} " + " ".join(f"{k}={v}" for k, v in p.facts.items())
                for p in procs]  # fmt: skip

    # ------------------------------------------------------------ boot

    def start_workers(self) -> None:
        if self.reload is not None:
            no_bytecode_for_workers()
        self.slots = [Slot(index=i) for i in range(self.pool.workers)]
        for slot in self.slots:
            slot.current = self._spawn(slot.index)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until every worker is ready. Raises SupervisorError on a boot failure."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not all(s.current is not None and s.current.ready.is_set() for s in self.slots):
            if self._stop_signal is not None:
                raise SupervisorError("interrupted while starting", EXIT_OK)
            if deadline is not None and time.monotonic() > deadline:
                raise SupervisorError("workers did not become ready in time", EXIT_BOOT)
            for proc in self._procs():
                code = proc.exitcode()
                if code is not None and not proc.ready.is_set():
                    why = f"worker {proc.index} {describe_exit(code)} while starting"
                    raise SupervisorError(why, code if code in (EXIT_BOOT, EXIT_APP_LOAD) else EXIT_BOOT)
            self._wait_events(0.05)
        for slot in self.slots:
            assert slot.current is not None
            slot.current.poll_ready()
        self.state = PoolState.RUNNING

    # ------------------------------------------------------------ running

    def run(self) -> int:
        """Supervise until a stop signal or the front end exits."""
        if self.reload is not None:
            self._reloader = Reloader(self.reload, self._on_files_changed)
            self._reloader.start()
            log.debug("reload: watching %s", self.reload.describe())
        try:
            while self._stop_signal is None:
                self._wait_events(self._poll_interval())
                if self.fleet is not None:
                    self.fleet.step(self._serving_pids(), time.monotonic())
                self.step()
        except Exception:  # a supervisor bug: still stop the children in order, never leave them
            log.critical("supervisor failed; stopping everything", exc_info=True)
            return self.stop() or EXIT_ERROR
        return self.stop()

    def step(self) -> None:
        """One pass over every state: signals asked for, deaths, readiness, recycling, the roll."""
        self._handle_requests()
        now = time.monotonic()
        for slot in list(self.slots):
            self._check_current(slot, now)
            self._check_successor(slot, now)
            self._check_recycle(slot, now)
        if self.pool.max_worker_rss_mib and now >= self._rss_check_at:
            self._rss_check_at = now + RSS_CHECK_S
            for slot in list(self.slots):
                self._check_memory(slot, now)
        self._check_draining(now)
        self._advance_roll(now)

    def _poll_interval(self) -> float:
        settled = all(s.current is not None and s.successor is None and s.current.phase is Phase.SERVING
                      for s in self.slots)  # fmt: skip
        fleet = self.fleet
        rolling = fleet is not None and (fleet.roll is not None or bool(fleet.plan) or bool(fleet.restarts))
        idle = settled and self.roll is None and not rolling and not self._requests
        return POLL_IDLE_S if idle else POLL_BUSY_S

    def _serving_pids(self) -> set[int]:
        """The workers a new front end waits for: every current one that is serving."""
        current = [s.current for s in self.slots if s.current is not None]
        return {p.pid for p in current if p.phase is Phase.SERVING}

    def _handle_requests(self) -> None:
        while self._requests:
            signum = self._requests.pop(0)
            if signum == signal.SIGHUP:
                self.request_reload()
            elif signum == signal.SIGTTIN:
                self.add_worker()
            elif signum == signal.SIGTTOU:
                self.remove_worker()
            elif signum == FRONTEND_ROLL_SIGNAL:
                self.roll_frontends()

    # ------------------------------------------------------------ current processes

    def _check_current(self, slot: Slot, now: float) -> None:
        proc = slot.current
        if proc is None:
            if slot.successor is None and now >= slot.restart_at:
                slot.current = self._spawn(slot.index)
            return
        if proc.phase is Phase.STARTING and proc.poll_ready():
            slot.failures = 0
        code = proc.exitcode()
        if code is None:
            return
        slot.current = None
        proc.reaped()
        # Back off only while the worker keeps dying before it is ready.
        slot.failures = 0 if proc.phase is Phase.SERVING else slot.failures + 1
        delay = restart_delay(slot.failures)
        slot.restart_at = now + delay
        if slot.successor is not None:
            log.warning("%s died: %s; its replacement (pid %d) is starting",
                        proc.label, describe_exit(code), slot.successor.pid)  # fmt: skip
        else:
            log.warning("%s died: %s; restarting in %.1fs", proc.label, describe_exit(code), delay)

    # ------------------------------------------------------------ successors

    def _check_successor(self, slot: Slot, now: float) -> None:
        new = slot.successor
        if new is None:
            return
        code = new.exitcode()
        if new.poll_ready() and code is None:
            self._promote(slot)
            return
        timeout = self.pool.worker_start_timeout_s
        if code is None and now - new.started_at <= timeout:
            return
        slot.successor = None
        if code is None:
            reason = f"new worker was not ready within {timeout:g}s (killed)"
            new.process.kill()
            self._retire(new, signal_it=False)  # reaped by the draining check
        else:
            reason = f"new worker {describe_exit(code)}"
            new.reaped()
        if new.why is Why.RELOAD:
            self._reload_failed(reason)
        else:
            slot.failures += 1
            slot.retry_at = now + max(restart_delay(slot.failures), 1.0)
            log.warning("worker %d: replacement (pid %d) failed: %s; %s keeps serving, next try in %.1fs",
                        slot.index, new.pid, reason, slot.current.label if slot.current else "nothing",
                        slot.retry_at - now)  # fmt: skip

    def _promote(self, slot: Slot) -> None:
        new, old = slot.successor, slot.current
        assert new is not None
        slot.current, slot.successor, slot.failures = new, None, 0
        why = new.why.value if new.why else "start"
        if old is not None:
            self._retire(old, linger=True)
            log.info("worker %d (pid %d) ready (%s); pid %d drains", slot.index, new.pid, why, old.pid)
        else:
            log.info("worker %d (pid %d) ready (%s)", slot.index, new.pid, why)
        if new.why is Why.RELOAD and self.roll is not None:
            self.roll.replaced_one(slot.index)

    def _retire(self, proc: WorkerProc, *, signal_it: bool = True, linger: bool = False) -> None:
        """Tell ``proc`` to drain and keep supervising it until it exits.

        ``linger``: it was replaced, so it may keep its sessions (SIGUSR1) up to the stream drain
        limit and ``max_lingering``; otherwise SIGTERM: everything ends within the graceful timeout.
        """
        now = time.monotonic()
        stream_drain_s = self.config.stream_drain_timeout_s
        linger = linger and signal_it and stream_drain_s > 0 and self.pool.max_lingering > 0
        proc.phase, proc.lingers, proc.retired_at = Phase.DRAINING, linger, now
        drain_s = max(self.graceful_timeout_s, stream_drain_s) if linger else self.graceful_timeout_s
        proc.drain_deadline = now + drain_s + DRAIN_MARGIN_S
        if signal_it:
            if linger:
                self._send_retire(proc)
            else:
                proc.process.terminate()
        self.draining.append(proc)
        if linger:
            self._limit_lingering(now)

    def _send_retire(self, proc: WorkerProc) -> None:
        os.kill(proc.pid, RETIRE_SIGNAL)

    def _limit_lingering(self, now: float) -> None:
        """Keep at most ``max_lingering`` retired workers with leave to linger: SIGTERM the oldest."""
        lingering = [p for p in self.draining if p.lingers and p.exitcode() is None]
        excess = len(lingering) - self.pool.max_lingering
        for proc in sorted(lingering, key=lambda p: (p.generation, p.retired_at))[: max(excess, 0)]:
            log.info("%s (generation %d) closes its sessions: more than %d workers would linger",
                     proc.label, proc.generation, self.pool.max_lingering)  # fmt: skip
            self._stop_lingering(proc, now)

    def _stop_lingering(self, proc: WorkerProc, now: float) -> None:
        """SIGTERM a retired worker: no more lingering, its sessions close (1012) now."""
        proc.lingers = False
        proc.drain_deadline = min(proc.drain_deadline, now + self.graceful_timeout_s + DRAIN_MARGIN_S)
        proc.process.terminate()

    def _check_draining(self, now: float) -> None:
        for proc in list(self.draining):
            code = proc.exitcode()
            if code is not None:
                self.draining.remove(proc)
                proc.reaped()
                if code == 0:
                    log.info("%s drained and exited", proc.label)
                else:
                    log.info("%s %s after it was told to leave", proc.label, describe_exit(code))
            elif now > proc.drain_deadline:
                log.warning("%s still draining after %.0fs; killing it",
                            proc.label, self.graceful_timeout_s + DRAIN_MARGIN_S)  # fmt: skip
                proc.process.kill()
                proc.drain_deadline = float("inf")

    # ------------------------------------------------------------ recycling (--max-requests)

    def _check_recycle(self, slot: Slot, now: float) -> None:
        proc = slot.current
        if proc is None or proc.limit == 0 or proc.phase is not Phase.SERVING:
            return
        if slot.successor is not None or now < slot.retry_at:
            return
        served = proc.requests
        if served < proc.limit:
            return
        recycling = sum(s.successor is not None and s.successor.why is Why.RECYCLE for s in self.slots)
        if recycling >= self.pool.max_surge:
            return  # the others' turn comes when a replacement is ready
        log.info("%s served %d requests (limit %d); starting its replacement", proc.label, served, proc.limit)
        slot.successor = self._spawn(slot.index, Why.RECYCLE)

    # ------------------------------------------------------------ --max-worker-rss

    def _check_memory(self, slot: Slot, now: float) -> None:
        """A serving worker over the limit is replaced as --max-requests does it: new one first,
        then the old one drains (no request lost), at most ``max_surge`` at once."""
        proc, limit = slot.current, self.pool.max_worker_rss_mib
        if (
            proc is None
            or proc.phase is not Phase.SERVING
            or slot.successor is not None
            or now < slot.retry_at
        ):
            return
        rss = rss_mib(proc.pid)
        if rss is None or rss <= limit:
            return
        replacing = sum(s.successor is not None and s.successor.why is Why.MEMORY for s in self.slots)
        if replacing >= self.pool.max_surge:
            return  # the next check sees it again
        self.memory_replacements += 1
        log.warning("%s uses %.0f MiB, over --max-worker-rss %d MiB; starting its replacement "
                    "(%d replaced for memory so far)",
                    proc.label, rss, limit, self.memory_replacements)  # fmt: skip
        slot.successor = self._spawn(slot.index, Why.MEMORY)

    # ------------------------------------------------------------ rolling restart

    def request_reload(self) -> None:
        """SIGHUP: replace every worker, new ones first; during a roll: start over after this batch."""
        indices = [slot.index for slot in self.slots]
        self.generation += 1
        if self.roll is None:
            self.roll = RollPlan(indices, self.pool.max_surge)
            self._roll_started = time.monotonic()
            log.info("reload: replacing %d worker(s), %d at a time", len(indices), self.pool.max_surge)
        else:
            self.roll.restart(indices)
            log.info("reload requested during a reload: starting over after the current batch")

    def _advance_roll(self, now: float) -> None:
        roll = self.roll
        if roll is None:
            return
        available = {slot.index for slot in self.slots if slot.successor is None}
        for index in roll.take_batch(available):
            self.slots[index].successor = self._spawn(index, Why.RELOAD)
        if roll.done:
            took = now - self._roll_started
            log.info("reload complete: %d worker(s) replaced in %.1fs", roll.replaced, took)
            self.roll = None
            self._reload_outcome(True, f"{roll.replaced} worker(s) replaced in {took:.1f}s")

    def _reload_failed(self, reason: str) -> None:
        """A new worker failed: stop the roll, drop its new workers still starting, keep the old ones.

        A new worker of the batch that is already ready (welcomed, taking traffic) takes over.
        """
        for slot in self.slots:
            new = slot.successor
            if new is None or new.why is not Why.RELOAD:
                continue
            if new.poll_ready() and new.exitcode() is None:
                self._promote(slot)
            else:
                slot.successor = None
                self._retire(new)
        self.roll = None
        running = sum(slot.current is not None for slot in self.slots)
        log.error("reload failed: %s; keeping the %d running worker%s",
                  reason, running, "" if running == 1 else "s")  # fmt: skip
        self._reload_outcome(False, reason)

    def _reload_outcome(self, ok: bool, reason: str) -> None:
        """For `zasgi reload --wait`: the outcome next to the pid file (control.py)."""
        self.reload_outcomes += 1
        if self.pool.pid_file:
            write_reload_result(self.pool.pid_file, self.reload_outcomes, ok, reason)

    def roll_frontends(self) -> None:
        """SIGUSR2: replace the front ends one at a time, new one first (fleet.py)."""
        if self.fleet is None:
            log.warning("SIGUSR2 ignored: no front end to roll here (zasgi appserver)")
            return
        log.info(self.fleet.request_roll())

    # ------------------------------------------------------------ scaling

    def add_worker(self) -> None:
        """SIGTTIN: one more slot."""
        slot = Slot(index=len(self.slots))
        slot.current = self._spawn(slot.index)
        self.slots.append(slot)
        log.info("SIGTTIN: added worker %d (%d workers)", slot.index, len(self.slots))

    def remove_worker(self) -> None:
        """SIGTTOU: the newest slot drains and goes; never below one."""
        if len(self.slots) <= 1:
            log.warning("SIGTTOU ignored: the pool keeps at least 1 worker")
            return
        slot = self.slots.pop()
        if self.roll is not None:
            self.roll.drop(slot.index)
        for proc in (slot.successor, slot.current):
            if proc is not None:
                self._retire(proc, linger=proc is slot.current)
        pid = f" (pid {slot.current.pid})" if slot.current else ""
        log.info("SIGTTOU: worker %d%s drains and leaves (%d workers)", slot.index, pid, len(self.slots))

    # ------------------------------------------------------------ processes

    def _spawn(self, index: int, why: Why | None = None) -> WorkerProc:
        process, ready, served = self._start_process(index)
        limit = request_limit(self.pool.max_requests, self.pool.max_requests_jitter, self.rng)
        proc = WorkerProc(
            index, process.pid, process, ready, served, limit, time.monotonic(), why, self.generation
        )
        log.info("worker %d started (pid %d)%s", index, proc.pid, f" ({why.value})" if why else "")
        return proc

    def _start_process(self, index: int) -> tuple[Any, Any, Any]:
        """A fresh spawn child (it imports the app's current code), its ready Event, its counter."""
        ready = _MP.Event()
        served = _MP.RawValue("Q", 0) if self.pool.max_requests else None
        args = (self.config, ready, served)
        process = _MP.Process(target=_worker_entry, args=args, name=f"zasgi-worker-{index}")
        process.start()
        return process, ready, served

    def _procs(self) -> Iterator[WorkerProc]:
        for slot in self.slots:
            yield from (p for p in (slot.current, slot.successor) if p is not None)
        yield from self.draining

    def _wait_events(self, timeout_s: float) -> None:
        handles: list[Any] = [p.process.sentinel for p in self._procs() if p.exitcode() is None]
        if self.fleet is not None:
            handles += self.fleet.handles()  # a report (workers joined) or an exit (EOF)
        if self._signal_r >= 0:
            handles.append(self._signal_r)
        for handle in wait(handles, timeout=timeout_s):
            if handle == self._signal_r:
                os.read(self._signal_r, 512)
            elif self.fleet is not None:
                self.fleet.read_reports()

    # ------------------------------------------------------------ stopping

    def stop(self) -> int:
        """Front end first (it finishes in-flight requests), then every worker drains."""
        self.state = PoolState.STOPPING
        self.roll = None
        if self._reloader is not None:
            self._reloader.stop()
        grace = self.graceful_timeout_s + 5
        force = self._stop_frontend(grace)
        procs = [p for p in self._procs() if p.exitcode() is None]
        for proc in procs:
            if force:
                proc.process.kill()
            elif proc.phase is not Phase.DRAINING or proc.lingers:  # not twice: that would force the stop
                proc.lingers = False
                proc.process.terminate()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.exitcode() is None for p in procs):
            self._wait_events(0.2)
            if self._stop_signal == -1 and not force:
                force = True
                log.warning("second stop signal: killing the workers")
                for proc in procs:
                    proc.process.kill()
        for proc in procs:
            if proc.exitcode() is None:
                log.warning("%s did not stop in time; killing it", proc.label)
                proc.process.kill()
                proc.process.join(5)
            shm.sweep(proc.pid)
        return EXIT_OK

    def _stop_frontend(self, grace: float) -> bool:
        """Stop the front ends (graceful unless forced; fleet.py); return whether the stop is forced."""
        if self.fleet is None:
            return self._stop_signal == -1
        return self.fleet.stop(grace, lambda: self._stop_signal == -1)


class SupervisorError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
