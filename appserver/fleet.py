"""``zasgi run``'s front ends: N processes on one port, and rolls that refuse and fail nothing.

Listeners. The supervisor binds the port itself (listeners.py): one socket
per front-end slot. Front end *i*, and every successor of it, gets a copy of
socket *i* (``--fd``). A successor therefore accepts on the very socket its
predecessor stops accepting on, and the connections waiting in that socket's
accept queue are never dropped (frontend/server.py says why closing a
SO_REUSEPORT listener would drop them).

Admin. With several front ends each has its own admin endpoint on a free
loopback port, listed for ``zasgi status --pid-file`` and for the others in
``LIST.admin`` (the serving ones), and all of them serve one admin socket the
supervisor binds once (``--admin-fd``), where any of them answers for all
(frontend/fleet_admin.py). Successors get it too; it never moves in a roll.

Backends. Each front end has its own ``ipc://`` endpoint, a new one per
generation. The workers connect to ``file://LIST`` (appserver/discovery.py
re-reads it five times a second): the supervisor lists there every front end
that is starting, serving or retiring. One leaves the list only once it has
exited: while it retires it still answers requests that arrive on its
keep-alive connections, and needs the workers for that.

A roll (SIGUSR2 to ``zasgi run``, or ``zasgi reload --frontends``) replaces the
slots one at a time, new one first (frontroll.py holds its states)::

    STARTING ──ready line──> JOINING ──every serving worker READY on it──> DONE
        │                       │          (the old one is sent SIGUSR1 and
        │                       │           retires by itself: frontend/retire.py;
        │                       │           the next slot starts at once)
        └──exit / timeout───────┴──> FAILED: the new one is killed and unlisted,
                                     the roll stops with one log line, the old
                                     front ends keep serving.

A serving front end that exits by itself is replaced the same way (a restart:
nothing to retire; a new one that fails is tried again with back-off). Its
socket stays open in the supervisor meanwhile, so new connections that the
kernel gives that socket wait in its accept queue instead of being refused.

The front end reports its READY workers on its ready pipe (``zasgi-workers
PID...`` after the ready line), so JOINING needs no polling of the admin
endpoint (which may be off).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wire import shm

from .control import restart_delay
from .discovery import write_list
from .frontroll import FE_TRANSITIONS, FeState, Roll, RollPhase
from .listeners import FleetError, bind_admin, bind_listeners, inherited_listener

log = logging.getLogger("zasgi.fleet")

RETIRE_SIGNAL = signal.SIGUSR1  # frontend/server.py: a successor serves the port, leave cleanly
START_TIMEOUT_S = 30.0  # a new front end's ready line, and then every worker joined to it


@dataclass(eq=False)
class FrontendProc:
    slot: int
    generation: int
    name: str
    endpoint: str
    popen: subprocess.Popen[bytes]
    report_fd: int  # our end of its ready pipe: the ready line, then zasgi-workers lines
    started_at: float
    state: FeState = FeState.STARTING
    url: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    workers: frozenset[int] = frozenset()  # pids READY on it, as it last reported
    _buffer: bytes = b""

    def to(self, new: FeState) -> None:
        if new not in FE_TRANSITIONS[self.state]:
            raise ValueError(f"{self.label}: {self.state.value} -> {new.value}")
        self.state = new

    @property
    def label(self) -> str:
        return f"front end {self.name} (pid {self.popen.pid})"

    @property
    def ready(self) -> bool:
        return bool(self.url)

    def read_reports(self) -> None:
        """Take what it wrote (never blocks); EOF (it exited) closes our end."""
        if self.report_fd < 0:
            return
        while True:
            try:
                chunk = os.read(self.report_fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                os.close(self.report_fd)
                self.report_fd = -1
                return
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for raw in lines:
                self._take(raw.decode(errors="replace").strip())

    def _take(self, line: str) -> None:
        words = line.split()
        if words[:2] == ["zasgi-ready", "frontend"] and len(words) >= 3:
            self.url = words[2]
            self.facts = dict(w.split("=", 1) for w in words[3:] if "=" in w)
        elif words[:1] == ["zasgi-workers"]:
            self.workers = frozenset(int(w) for w in words[1:] if w.isdigit())


@dataclass
class Fleet:
    """The front-end processes of ``zasgi run``: ``len(listeners)`` slots, each rolled in turn."""

    argv: Sequence[str]  # python -m frontend's arguments common to every front end
    address: tuple[str, int]  # host, port: bound once, by start(), into ``count`` listeners
    count: int
    endpoint_base: str  # "ipc:///run/.../run-PID": slot i of generation g binds BASE-i.g.sock
    list_path: str  # the workers' file:// list
    fixed_endpoint: str | None = None  # run --backend tcp://...: one front end on it, never rolled
    env: Mapping[str, str] | None = None
    admin_ports: list[int | None] = field(default_factory=list)  # per slot; None: the front end's default
    # (host, port, required): the one admin port every front end serves, answering for all
    # (frontend/fleet_admin.py); bound by start(); a defaulted one (not required) may be taken.
    shared_admin: tuple[str, int, bool] | None = None
    admin_socket: socket.socket | None = None
    named: bool = False  # --name fe<i>: several front ends share one log stream
    start_timeout_s: float = START_TIMEOUT_S
    listen_fd: int | None = None  # run --fd / systemd's socket: every slot shares it instead of a bind
    own_socket: bool = False  # run --uds: the (one) front end binds its Unix socket itself; no rolls
    listeners: list[socket.socket] = field(default_factory=list)
    procs: list[FrontendProc] = field(default_factory=list)
    plan: list[int] = field(default_factory=list)  # slots still to roll, in order
    roll: Roll | None = None
    restarts: dict[int, float] = field(default_factory=dict)  # slot -> when to start its front end again
    failures: dict[int, int] = field(default_factory=dict)  # slot -> starts in a row that failed
    generation: int = 0
    _parent_r: int = -1
    _parent_w: int = -1

    @property
    def size(self) -> int:
        return self.count

    def handles(self) -> list[int]:
        """File descriptors to wait on: a report or an exit wakes the supervisor."""
        return [p.report_fd for p in self.procs if p.report_fd >= 0]

    def read_reports(self) -> None:
        for proc in self.procs:
            proc.read_reports()

    # ------------------------------------------------------------ boot

    def start(self, stopping: Any = lambda: False) -> list[FrontendProc]:
        """Bind the port, then start every slot's front end, one after the other, each until its
        ready line. Raises FleetError if the port is taken or one does not start (the ones started
        are left to ``stop``)."""
        if self.own_socket:
            self.listeners = []
        elif self.listen_fd is not None:
            self.listeners = [inherited_listener(self.listen_fd)] * self.count
        else:
            self.listeners = bind_listeners(*self.address, self.count)
        self._bind_admin()
        self._parent_r, self._parent_w = os.pipe()  # they leave when this closes: we died
        for slot in range(self.size):
            proc = self._spawn(slot)
            deadline = time.monotonic() + self.start_timeout_s
            while not proc.ready and proc.report_fd >= 0 and time.monotonic() < deadline and not stopping():
                _wait_readable([proc.report_fd], min(0.2, max(deadline - time.monotonic(), 0)))
                proc.read_reports()
            if not proc.ready:
                code = _reap(proc.popen)
                raise FleetError(f"front end did not start (exit code {code})")
            proc.to(FeState.SERVING)
        self._list()
        return list(self.procs)

    def _bind_admin(self) -> None:
        if self.shared_admin is None:
            return
        host, port, required = self.shared_admin
        try:
            self.admin_socket = bind_admin(host, port)
        except FleetError as exc:
            if required:
                raise
            log.warning("%s: each front end's own admin endpoint only (zasgi status --pid-file); "
                        "pass --admin-port", exc)  # fmt: skip

    @property
    def admin_url(self) -> str | None:
        """The shared admin endpoint's URL, once bound."""
        if self.admin_socket is None:
            return None
        host, port = self.admin_socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # ------------------------------------------------------------ running

    def step(self, worker_pids: set[int], now: float) -> None:
        """Read reports, reap exits, advance the roll (or a restart)."""
        for proc in list(self.procs):
            proc.read_reports()
            if proc.popen.poll() is None:
                continue
            code = proc.popen.returncode
            if proc.state is FeState.RETIRING:
                self._forget(proc)
                how = "retired and exited" if code == 0 else f"exited with code {code} while retiring"
                log.info("%s %s", proc.label, how)
            elif proc.state is FeState.SERVING:
                # Its socket stays open here: new connections wait in its accept queue for the
                # replacement instead of being refused.
                self._forget(proc)
                taking_over = self.roll is not None and self.roll.slot == proc.slot
                if not taking_over:
                    self.restarts[proc.slot] = now
                log.error("%s exited with code %s; %s", proc.label, code,
                          "its replacement is starting" if taking_over else "starting a new one")  # fmt: skip
        self._advance(worker_pids, now)

    def request_roll(self) -> str:
        """SIGUSR2: replace every slot's front end, one at a time; a line for the log."""
        if self.fixed_endpoint is not None:
            return (f"front-end roll refused: a successor cannot bind --backend {self.fixed_endpoint} "
                    "beside the running front end (leave --backend out to roll)")  # fmt: skip
        if self.own_socket:
            return ("front-end roll refused: a successor cannot bind the --uds socket beside the running "
                    "front end (pass a bound socket with --fd to roll)")  # fmt: skip
        if self.roll is not None or self.plan:
            self.plan = list(range(self.size))  # start over once the slot under way is done
            return "front-end roll requested during a roll: starting over after the current front end"
        self.plan = list(range(self.size))
        return f"front-end roll: replacing {self.size} front end(s), one at a time"

    def _advance(self, worker_pids: set[int], now: float) -> None:
        roll = self.roll
        if roll is None:
            due = [slot for slot, at in self.restarts.items() if at <= now]
            if due:  # a slot with no front end comes before a roll
                del self.restarts[due[0]]
                self.generation += 1
                self.roll = Roll(due[0], self._spawn(due[0]), restart=True)
            elif self.plan:
                slot = self.plan.pop(0)
                self.generation += 1
                self.roll = Roll(slot, self._spawn(slot))
            return
        new = roll.new
        if new.popen.poll() is not None:
            self._fail(f"{new.label} exited with code {new.popen.returncode} before it was ready")
            return
        if now - new.started_at > self.start_timeout_s:
            what = "ready line" if roll.phase is RollPhase.STARTING else "workers"
            self._fail(f"{new.label}: no {what} within {self.start_timeout_s:g}s")
            return
        if roll.phase is RollPhase.STARTING and new.ready:
            roll.to(RollPhase.JOINING)
        if roll.phase is RollPhase.JOINING and worker_pids and worker_pids <= new.workers:
            roll.to(RollPhase.DONE)
            new.to(FeState.SERVING)
            self.failures.pop(roll.slot, None)
            if roll.restart:
                log.info("%s ready with %d worker(s) (%.1fs), in place of the one that exited",
                         new.label, len(new.workers), now - new.started_at)  # fmt: skip
            for old in self.procs:
                if old.slot == roll.slot and old is not new and old.state is FeState.SERVING:
                    old.to(FeState.RETIRING)
                    _signal(old.popen, RETIRE_SIGNAL)
                    log.info("%s ready with %d worker(s) (%.1fs); %s retires",
                             new.label, len(new.workers), now - new.started_at, old.label)  # fmt: skip
            self.roll = None
            self._list()
            if not self.plan and not roll.restart:
                log.info("front-end roll complete")

    def _fail(self, reason: str) -> None:
        roll = self.roll
        assert roll is not None
        roll.to(RollPhase.FAILED)
        new = roll.new
        if new.popen.poll() is None:
            new.popen.kill()
        _reap(new.popen)
        new.read_reports()
        self._forget(new)
        self.roll = None
        if roll.restart or not any(p.slot == roll.slot for p in self.procs):
            # Nothing else serves this slot (its socket queues connections meanwhile): try again, backing off.
            failures = self.failures[roll.slot] = self.failures.get(roll.slot, 0) + 1
            delay = max(restart_delay(failures), 1.0)
            self.restarts[roll.slot] = time.monotonic() + delay
            log.error("front end for slot %d did not start: %s; next try in %.1fs", roll.slot, reason, delay)
            return
        self.plan = []
        log.error("front-end roll stopped: %s; the running front ends keep serving", reason)

    def _forget(self, proc: FrontendProc) -> None:
        """It exited: unlist it (its workers forget it) and remove its socket file."""
        if proc.report_fd >= 0:
            os.close(proc.report_fd)
            proc.report_fd = -1
        if proc in self.procs:
            self.procs.remove(proc)
        self._list()
        self._unlink(proc)

    def _unlink(self, proc: FrontendProc) -> None:
        # ZeroMQ leaves an ipc socket file behind; a host rolled daily would collect them.
        # (And a front end killed before a worker mapped its request-body segment, that file.)
        shm.sweep(proc.popen.pid)
        if proc.endpoint.startswith("ipc://") and proc.endpoint != self.fixed_endpoint:
            try:
                os.unlink(proc.endpoint.removeprefix("ipc://"))
            except OSError:
                pass

    # ------------------------------------------------------------ processes

    def endpoint(self, slot: int, generation: int) -> str:
        return self.fixed_endpoint or f"{self.endpoint_base}-{slot}.{generation}.sock"

    def _spawn(self, slot: int) -> FrontendProc:
        report_r, report_w = os.pipe()
        os.set_blocking(report_r, False)
        listener = [self.listeners[slot].fileno()] if self.listeners else []
        endpoint = self.endpoint(slot, self.generation)
        name = f"fe{slot}" if self.generation == 0 else f"fe{slot}.{self.generation}"
        argv = [sys.executable, "-m", "frontend", *self.argv, "--backend", endpoint,
                "--ready-fd", str(report_w), "--parent-fd", str(self._parent_r)]  # fmt: skip
        if listener:  # (none with --uds: the front end binds it)
            argv += ["--fd", str(listener[0])]
        if self.named:
            argv += ["--name", name]
        if self.fixed_endpoint is None and self.endpoint_base.startswith("ipc://"):
            # Every front end of the slot binds it in turn: a retiring one hands its idle
            # keep-alive connections to its successor there (frontend/handoff.py).
            argv += ["--handoff-path", f"{self.endpoint_base.removeprefix('ipc://')}-{slot}.handoff"]
        admin = self.admin_ports[slot] if slot < len(self.admin_ports) else None
        if admin is not None:
            argv += ["--admin-port", str(admin)]
        shared = [self.admin_socket.fileno()] if self.admin_socket is not None else []
        if shared:
            argv += ["--admin-fd", str(shared[0]), "--admin-peers", self.list_path + ".admin"]
        try:
            popen = subprocess.Popen(
                argv, pass_fds=(report_w, self._parent_r, *listener, *shared), stdout=sys.stderr,
                start_new_session=True, env=self.env,
            )  # fmt: skip
        finally:
            os.close(report_w)
        proc = FrontendProc(slot, self.generation, name, endpoint, popen, report_r, time.monotonic())
        self.procs.append(proc)
        self._list()
        log.info("front end %s started (pid %d)%s", name, popen.pid, " (roll)" if self.generation else "")
        return proc

    def _list(self) -> None:
        """Tell the workers (discovery.py) which front ends to join: every one alive; and
        ``zasgi status --pid-file`` where the serving ones' admin endpoints are."""
        write_list(self.list_path, [p.endpoint for p in self.procs])
        admins = [p.facts["admin"] for p in self.procs if p.state is FeState.SERVING and "admin" in p.facts]
        write_list(self.list_path + ".admin", admins)

    # ------------------------------------------------------------ stopping

    def stop(self, grace_s: float, forced: Any) -> bool:
        """SIGTERM every front end (retiring ones too), wait up to ``grace_s``; a second stop
        signal (``forced()``) kills them. Returns whether the stop was forced."""
        force = bool(forced())
        self.plan, self.roll, self.restarts = [], None, {}
        for proc in self.procs:
            _signal(proc.popen, signal.SIGKILL if force else signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(p.popen.poll() is None for p in self.procs) and time.monotonic() < deadline:
            if forced() and not force:
                force = True
                for proc in self.procs:
                    _signal(proc.popen, signal.SIGKILL)
            _wait_readable(self.handles(), 0.2)
            for proc in self.procs:
                proc.read_reports()
        for proc in self.procs:
            if proc.popen.poll() is None:
                log.warning("%s did not stop in %.0fs; killing it", proc.label, grace_s)
                proc.popen.kill()
                proc.popen.wait()
            if proc.report_fd >= 0:
                os.close(proc.report_fd)
                proc.report_fd = -1
            self._unlink(proc)
        for fd in (self._parent_r, self._parent_w):
            if fd >= 0:
                os.close(fd)
        self._parent_r = self._parent_w = -1
        for sock in self.listeners:
            sock.close()
        if self.admin_socket is not None:
            self.admin_socket.close()
            self.admin_socket = None
        for path in (self.list_path, self.list_path + ".admin"):
            try:
                os.unlink(path)
            except OSError:
                pass
        return force


def _signal(popen: subprocess.Popen[bytes], sig: int) -> None:
    try:
        popen.send_signal(sig)
    except ProcessLookupError:
        pass


def _reap(popen: subprocess.Popen[bytes]) -> int | None:
    try:
        return popen.wait(1.0)
    except subprocess.TimeoutExpired:
        return None


def _wait_readable(fds: list[int], timeout_s: float) -> None:
    import select

    if fds:
        select.select(fds, [], [], timeout_s)
    else:
        time.sleep(timeout_s)
