"""Where the front end listens (frontend/listen.py): bind errors that name the address (exit 3),
--uds (+ --uds-mode), --fd, systemd's LISTEN_FDS, --backlog; and `zasgi run`'s private socket
file removed at exit, a crashed run's at the next start."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.helpers.processes import REPO, Proc, zasgi

from .conftest import READY_FRONTEND, start_run, stop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _frontend(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "frontend",
            "--backend",
            f"ipc://{tempfile.mkdtemp(prefix='zl-')}/b.sock",
            "--admin-port",
            "0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_busy_port_names_the_address_and_exits_3() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _frontend("--port", str(port))
    assert done.returncode == 3
    assert _one_line(done) == f"frontend: error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_bad_host_is_one_line_naming_it() -> None:
    done = _frontend("--host", "no-such-host.invalid", "--port", "0")
    assert done.returncode == 3
    err = _one_line(done)
    assert "--host 'no-such-host.invalid'" in err and "gaierror" not in err


def test_run_on_a_busy_port_exits_3(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = Proc("run", zasgi("run", "tests.apps.probe:app", "--port", str(port)), tmp_path)
        assert proc.wait_exit(60) == 3
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.log()
    assert "Traceback" not in proc.log()


def test_run_on_a_unix_socket_with_mode(tmp_path: Path) -> None:
    path = tmp_path / "web.sock"
    proc = Proc("run", zasgi("run", "examples.hello:app", "--uds", str(path), "--uds-mode", "660"), tmp_path)
    try:
        proc.wait_for(f"zasgi running on http\\+unix://{re.escape(str(path))} ", 60)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=30) as client:
            assert client.get("http://x/").status_code == 200, proc.log()
    finally:
        proc.kill_tree()
    assert not path.exists()  # removed at exit


def test_a_stale_unix_socket_file_is_replaced_a_live_one_is_not(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: a crashed front end's
    fe = Proc("frontend", [sys.executable, "-m", "frontend", "--uds", path, "--admin-port", "0"], tmp_path)
    try:
        fe.wait_for(READY_FRONTEND.replace("http://", "http\\+unix://"), 60)
        done = _frontend("--uds", path)  # a second front end on the same, live, socket
        assert done.returncode == 3
        assert (
            _one_line(done) == f"frontend: error: cannot listen on unix socket {path}: Address already in use"
        )
    finally:
        fe.kill_tree()


def test_an_inherited_fd(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with open(tmp_path / "fe.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frontend",
                "--fd",
                str(sock.fileno()),
                "--admin-port",
                "0",
                "--backend",
                f"ipc://{tmp_path}/b.sock",
                "--backlog",
                "7",
            ],
            pass_fds=(sock.fileno(),),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    sock.close()
    try:
        _wait_line(tmp_path / "fe.log", rf"zasgi-ready frontend http://127\.0\.0\.1:{port} ")
        listen = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert listen.split()[2] == "7", listen  # Send-Q of a listening socket: its backlog
        # No worker connects: the front end answers 503 after its short no-worker grace.
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 503
    finally:
        proc.kill()
        proc.wait(10)


def test_systemd_socket_activation(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # As systemd does it: the socket at fd 3, LISTEN_PID the front end's own pid (exec keeps it).
    argv = [sys.executable, "-m", "frontend", "--admin-port", "0", "--backend", f"ipc://{tmp_path}/b.sock"]
    script = (
        f"import os; os.dup2({sock.fileno()}, 3); "
        f"os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execv({argv[0]!r}, {argv!r})"
    )
    with open(tmp_path / "fe.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            pass_fds=(sock.fileno(),),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    sock.close()
    try:
        _wait_line(tmp_path / "fe.log", rf"zasgi-ready frontend http://127\.0\.0\.1:{port} ")
    finally:
        proc.kill()
        proc.wait(10)


def test_run_removes_its_socket_file_and_a_dead_runs(tmp_path: Path) -> None:
    runtime = Path(tempfile.gettempdir()) / f"zasgi-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = runtime / f"run-{dead.pid}.sock"  # as a killed run leaves it
    stale.touch()
    server = start_run(tmp_path, workers=1)
    mine = runtime / f"run-{server.procs[0].pid}-0.0.sock"  # front end 0's (fleet.py), generation 0
    try:
        assert mine.exists() and not stale.exists()
    finally:
        stop(server)
    assert not mine.exists()


def _wait_line(path: Path, pattern: str, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if re.search(pattern, path.read_text(errors="replace")):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in {path}:\n{path.read_text(errors='replace')[-4000:]}")


def test_a_bind_error_under_json_logs_is_a_json_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = Proc("run", zasgi("run", "tests.apps.probe:app", "--port", str(port), "--log-format", "json"),
                    tmp_path)  # fmt: skip
        assert proc.wait_exit(60) == 3
    records = [json.loads(line) for line in proc.log().splitlines() if line.strip()]  # every line is JSON
    wanted = f"zasgi: cannot listen on 127.0.0.1:{port}: Address already in use by another program"
    assert any(r["message"] == wanted and r["level"] == "error" for r in records), records


@pytest.mark.parametrize("frontends", ["1", "2"])
def test_run_on_an_inherited_fd(tmp_path: Path, frontends: str) -> None:
    """With several front ends (appserver/fleet.py) every one accepts on the inherited socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    argv = zasgi("run", "examples.hello:app", "--fd", str(sock.fileno()), "--admin-port", "0",
                 "--frontends", frontends, "--force")  # fmt: skip
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(
            argv,
            pass_fds=(sock.fileno(),),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    sock.close()
    try:
        _wait_line(tmp_path / "run.log", rf"zasgi running on http://127\.0\.0\.1:{port} ")
        for _ in range(4):  # (new connections: the front ends take turns accepting)
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
    finally:
        proc.terminate()  # the supervisor stops its front end and workers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
