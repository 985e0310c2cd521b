"""``python -m frontend`` as a real process: ready line, fds, signals, one-line errors."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)
READY_TIMEOUT_S = 10.0


def _spawn(tmp_path: Path, *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    with open(tmp_path / "frontend.log", "wb") as log:  # stderr to a file: never an undrained pipe
        return subprocess.Popen(
            [sys.executable, "-m", "frontend", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=log, pass_fds=pass_fds, cwd=Path(__file__).parents[2],
        )  # fmt: skip


def _read_line(fd: int) -> bytes:
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    data = b""
    try:
        while not data.endswith(b"\n"):
            if not sel.select(READY_TIMEOUT_S):
                raise TimeoutError(f"no line within {READY_TIMEOUT_S}s (got {data!r})")
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        sel.close()
    return data


def _backend(tmp_path: Path) -> str:
    return f"ipc://{tempfile.mkdtemp(prefix='zfe-')}/fe.sock"


def _stop(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_ready_line_on_the_ready_fd_only_then_sigterm_exits_0(tmp_path: Path) -> None:
    """With --ready-fd the line is for the parent: not on stdout, where users would see it (issue 21)."""
    r, w = os.pipe()
    backend = _backend(tmp_path)
    proc = _spawn(tmp_path, "--backend", backend, "--ready-fd", str(w), pass_fds=(w,))
    os.close(w)
    try:
        line = _read_line(r).decode()
        assert line.startswith("zasgi-ready frontend http://127.0.0.1:")
        assert line.split()[3] == f"backend={backend}"  # admin=URL may follow
        port = int(line.split()[2].rsplit(":", 1)[1])
        assert port > 0
        data = line.encode()  # (the two lines may come in one read)
        while data.count(b"\n") < 2:
            data += _read_line(r)
        # The ready line, then (for a supervisor rolling front ends) the READY workers as they change.
        assert data.decode().splitlines()[:2] == [line.splitlines()[0], "zasgi-workers "]
    finally:
        os.close(r)
        proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None
    out = proc.stdout.read()  # to EOF: the process has ended
    assert _stop(proc) == 0, (tmp_path / "frontend.log").read_text()
    assert b"zasgi-ready" not in out


def test_ready_line_on_stdout_without_a_ready_fd(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "--backend", _backend(tmp_path))
    assert proc.stdout is not None
    assert _read_line(proc.stdout.fileno()).startswith(b"zasgi-ready frontend http://127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    assert _stop(proc) == 0


def test_parent_fd_eof_shuts_down(tmp_path: Path) -> None:
    r, w = os.pipe()
    proc = _spawn(tmp_path, "--backend", _backend(tmp_path), "--parent-fd", str(r), pass_fds=(r,))
    os.close(r)
    assert proc.stdout is not None
    assert _read_line(proc.stdout.fileno()).startswith(b"zasgi-ready frontend")
    os.close(w)  # the "parent" dies
    assert _stop(proc) == 0, (tmp_path / "frontend.log").read_text()


def test_env_vars_configure_options(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    env = {**os.environ, "ZASGI_BACKEND": backend, "ZASGI_LOG_LEVEL": "warning"}
    with open(tmp_path / "frontend.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "frontend", "--port", "0"], stdout=subprocess.PIPE, env=env, stderr=log,
            cwd=Path(__file__).parents[2],
        )  # fmt: skip
    assert proc.stdout is not None
    line = _read_line(proc.stdout.fileno()).decode()
    proc.send_signal(signal.SIGINT)
    assert f"backend={backend}" in line
    assert _stop(proc) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backend", "tcp://0.0.0.0:5599"], "--insecure"),
        (["--port", "-1"], "--port"),
        (["--liveness", "0"], "liveness"),
        (["--backend", "udp://x"], "backend"),
        (["--ready-fd", "987"], "--ready-fd"),
        (["--no-such-option"], "no-such-option"),
        (["--uds-mode", "999"], "--uds-mode"),
        (["--backlog", "0"], "--backlog"),
        (["--uds", "/tmp/x.sock", "--fd", "5"], "--uds and --fd"),
        (["--fd", "987"], "fd 987"),
    ],
)
def test_bad_options_give_one_line_and_nonzero_exit(args: list[str], needle: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "frontend", *args], capture_output=True, timeout=30,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    err = done.stderr.decode().strip()
    assert done.returncode != 0
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert done.stdout == b""


def test_insecure_allows_a_non_loopback_backend(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "--backend", "tcp://0.0.0.0:0", "--insecure")
    assert proc.stdout is not None
    line = _read_line(proc.stdout.fileno()).decode()
    backend = line.split()[3]
    assert backend.startswith("backend=tcp://0.0.0.0:") and not backend.endswith(":0")  # the bound port
    proc.send_signal(signal.SIGTERM)
    assert _stop(proc) == 0
