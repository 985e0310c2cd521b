"""The pool's control plane without processes: pid file, reload signal, roll plan, exit wording.

Everything here is pure or touches only one file, so it is tested without
starting workers; ``supervisor.py`` does the process work.

* ``PidFile``: written at start, removed at exit, and *locked* (``flock``)
  for the supervisor's lifetime. ``zasgi reload`` signals the pid only while
  the lock is held, so a stale file (the supervisor was SIGKILLed, the pid
  reused by another program) is a clear error instead of a SIGHUP sent to a
  stranger. A second supervisor on the same pid file refuses to start.
* ``RollPlan``: which slots a rolling restart replaces next, in batches of at
  most ``max_surge``; the supervisor's loop polls it and never blocks.
* ``describe_exit``, ``restart_delay``, ``request_limit``: the wording and
  numbers the supervisor logs and uses.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import signal
from collections.abc import Collection, Iterable
from typing import Any

log = logging.getLogger("zasgi.supervisor")

RELOAD_SIGNAL = signal.SIGHUP
RETIRE_SIGNAL = signal.SIGUSR1  # supervisor -> a replaced worker: drain, lingering while sessions are left
FRONTEND_ROLL_SIGNAL = signal.SIGUSR2  # -> zasgi run: replace its front ends one at a time (fleet.py)
EXIT_BOOT, EXIT_APP_LOAD, EXIT_EVICTED = 3, 4, 5  # (5: pulse.EXIT_EVICTED)
RESTART_BACKOFF_MAX_S = 10.0

_EXIT_MEANING = {
    EXIT_BOOT: "boot error",
    EXIT_APP_LOAD: "app could not be loaded",
    EXIT_EVICTED: "evicted by a front end: its event loop stayed blocked past --timeout-worker-blocked",
}


# ---------------------------------------------------------------- wording and numbers


def describe_exit(code: int | None) -> str:
    """``exitcode`` of a multiprocessing child in words: 'killed by SIGKILL', 'exited with code 4 (...)'."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    meaning = _EXIT_MEANING.get(code)
    return f"exited with code {code}" + (f" ({meaning})" if meaning else "")


def restart_delay(failures: int) -> float:
    """Back-off before the next start after ``failures`` starts in a row that never became ready."""
    return 0.0 if failures <= 0 else min(RESTART_BACKOFF_MAX_S, 0.5 * 2**failures)


def request_limit(max_requests: int, jitter: int, rng: random.Random | None = None) -> int:
    """A worker's --max-requests budget: N + uniform(0..J), 0 = unlimited (gunicorn's rule)."""
    if max_requests <= 0:
        return 0
    return max_requests + (rng or random).randint(0, max(jitter, 0))


# ---------------------------------------------------------------- rolling restart plan


class RollPlan:
    """Slots still to replace, and the batch being replaced now (at most ``max_surge`` at once).

    ``take_batch`` starts the next batch once the current one is empty; a
    ``restart`` (SIGHUP during the roll) takes effect there, after the batch.
    """

    def __init__(self, slots: Iterable[int], max_surge: int) -> None:
        if max_surge < 1:
            raise ValueError("max_surge must be >= 1")
        self.max_surge = max_surge
        self.pending: list[int] = list(slots)
        self.batch: set[int] = set()
        self.replaced = 0
        self._restart: list[int] | None = None

    @property
    def done(self) -> bool:
        return not self.pending and not self.batch and self._restart is None

    def restart(self, slots: Iterable[int]) -> None:
        """Replace ``slots`` all over again once the current batch is done."""
        self._restart = list(slots)

    def take_batch(self, available: Collection[int]) -> list[int]:
        """The next slots to replace (only when no batch is in flight); ``available`` may start one now."""
        if self.batch:
            return []
        if self._restart is not None:
            self.pending, self._restart = self._restart, None
        batch = [index for index in self.pending if index in available][: self.max_surge]
        self.pending = [index for index in self.pending if index not in batch]
        self.batch = set(batch)
        return batch

    def replaced_one(self, index: int) -> None:
        """The new worker of ``index`` is ready (the old one drains)."""
        if index in self.batch:
            self.batch.discard(index)
            self.replaced += 1

    def drop(self, index: int) -> None:
        """Slot ``index`` left the pool (SIGTTOU): nothing to replace there any more."""
        self.batch.discard(index)
        self.pending = [i for i in self.pending if i != index]
        if self._restart is not None:
            self._restart = [i for i in self._restart if i != index]


# ---------------------------------------------------------------- pid file


class PidFileError(Exception):
    """One line for the user: the pid file cannot be written, read, or is stale."""


class PidFile:
    """This process's pid in ``path``, locked while it runs (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PidFileError(f"cannot write pid file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid_text(fd)
            os.close(fd)
            held = f" (pid {other})" if other else ""
            raise PidFileError(f"pid file {self.path} is held by a running zasgi{held}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the file if it is still ours (not replaced by someone else), then unlock."""
        if self._fd < 0:
            return
        try:
            ours = os.fstat(self._fd)
            there = os.stat(self.path)
            if (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)  # releases the lock
        self._fd = -1


def rss_mib(pid: int) -> float | None:
    """A process's resident memory in MiB (Linux /proc), None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


# ---------------------------------------------------------------- reload outcomes
# The supervisor writes each rolling restart's outcome next to its pid file (PIDFILE.reload, JSON:
# seq, ok, reason); `zasgi reload --wait` sends SIGHUP and waits for a seq past the one it saw.


def reload_result_path(pid_file: str) -> str:
    return pid_file + ".reload"


def write_reload_result(pid_file: str, seq: int, ok: bool, reason: str) -> None:
    """Replace the outcome file at once (a reader never sees half of it); failures only logged."""
    path = reload_result_path(pid_file)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "seq": seq, "ok": ok, "reason": reason}, f)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the reload outcome to %s: %s", path, exc.strerror)


def read_reload_result(pid_file: str) -> dict[str, Any] | None:
    try:
        with open(reload_result_path(pid_file)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_reload_result(pid_file: str) -> None:
    try:
        os.unlink(reload_result_path(pid_file))
    except OSError:
        pass


def _read_pid_text(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def running_pid(path: str) -> int:
    """The pid of the live supervisor that holds ``path``; PidFileError (one line) otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise PidFileError(f"no pid file at {path} (is zasgi running with --pid-file {path}?)") from None
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror}") from None
    try:
        pid = _read_pid_text(fd)
        if pid is None:
            raise PidFileError(f"pid file {path} does not hold a process id")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return pid  # held: the supervisor that wrote it is alive
        raise PidFileError(f"stale pid file {path}: no zasgi holds it (pid {pid} is not a running zasgi)")
    finally:
        os.close(fd)


def send_reload(path: str, signum: int = RELOAD_SIGNAL) -> int:
    """SIGHUP the supervisor named by ``path`` (a rolling restart; ``FRONTEND_ROLL_SIGNAL``: roll
    its front ends instead); return its pid."""
    pid = running_pid(path)
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise PidFileError(f"stale pid file {path}: pid {pid} is not running") from None
    except PermissionError:
        raise PidFileError(f"not allowed to signal pid {pid} (from {path})") from None
    return pid
