"""Real processes for integration tests: spawn, wait for a ready line, always kill.

Output goes to a log file under tmp_path (never an undrained PIPE); readiness
is a line in that file, polled with a deadline; teardown signals the whole
process tree by PID (SIGTERM, then SIGKILL), children included, because
zasgi's children run in their own process groups.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


class Proc:
    def __init__(
        self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:  # fmt: skip
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # The child writes to its own copy of the descriptor: ours is closed at once, so a Proc that
        # is never kill_tree'd (it exited by itself) leaks no open file for the collector to warn about.
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=REPO, env=full_env, start_new_session=True, pass_fds=pass_fds,
            )  # fmt: skip
        self.pid = self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        """Poll the log for ``pattern``; fail with the log if the process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.log())
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{self.name}: {pattern!r} not seen (exit code {self.popen.poll()}); log:\n{self.log()[-6000:]}"
        )

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit in {timeout_s}s; log:\n{self.log()[-6000:]}") from None

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> set[int]:
        """The live multiprocessing-spawned descendants: a zasgi supervisor's workers, draining ones too."""
        pids = set()
        for child in self.descendants():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                    pids.add(child.pid)
            except psutil.NoSuchProcess:
                pass
        return pids

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill_tree(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process, give it grace_s, then SIGKILL it and every descendant."""
        tree = self.descendants()
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        for proc in [psutil.Process(self.pid) if self.popen.poll() is None else None, *tree]:
            if proc is None:
                continue
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        wait_gone(tree, timeout_s=5)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each of ``procs`` has exited; the ones still running after ``timeout_s``. A zombie
    counts as exited: one reparented to PID 1 is reaped when PID 1 gets to it (on these VMs ~1-2 s
    later, where psutil.wait_procs would wait for that on every server a test stops)."""
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def zasgi(*args: str) -> list[str]:
    return [sys.executable, "-m", "appserver.cli", *args]


def free_tcp_port() -> int:
    """Only for ZeroMQ tcp:// endpoints that must be known before binding; HTTP uses port 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
