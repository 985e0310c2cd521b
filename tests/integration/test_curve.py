"""CurveZMQ between the tiers, with real processes: keygen, who may join, refusing an open backend."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import zmq.auth

from tests.helpers.processes import REPO, Proc, free_tcp_port, zasgi

from .conftest import PROBE, READY_APPSERVER, READY_FRONTEND, start_run, stop

pytestmark = pytest.mark.integration


def _zasgi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(zasgi(*args), capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, **(env or {})})  # fmt: skip


def test_keygen_writes_a_key_pair_and_never_overwrites(tmp_path: Path) -> None:
    out = _zasgi("keygen", str(tmp_path / "worker"))
    assert out.returncode == 0, out.stderr
    public_file, secret_file = tmp_path / "worker.key", tmp_path / "worker.key_secret"
    public, _ = zmq.auth.load_certificate(public_file)
    public2, secret = zmq.auth.load_certificate(secret_file)
    assert out.stdout.strip() == public.decode() == public2.decode() and secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    before = secret_file.read_bytes()

    again = _zasgi("keygen", str(tmp_path / "worker"))
    assert again.returncode != 0
    assert "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert secret_file.read_bytes() == before


def test_a_non_loopback_backend_without_keys_refuses_to_start_naming_insecure(tmp_path: Path) -> None:
    out = _zasgi("frontend", "--port", "0", "--backend", f"tcp://0.0.0.0:{free_tcp_port()}")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--insecure" in lines[0] and "Traceback" not in out.stderr, out.stderr


def test_half_a_curve_configuration_is_a_usage_error(tmp_path: Path) -> None:
    assert _zasgi("keygen", str(tmp_path / "w")).returncode == 0
    fe = _zasgi("frontend", "--port", "0", "--curve-secret-key", str(tmp_path / "w.key_secret"))
    assert fe.returncode == 2 and "--authorized-keys" in fe.stderr and len(fe.stderr.strip().splitlines()) == 1
    worker = _zasgi("appserver", PROBE, "--connect", "tcp://127.0.0.1:1",
                    env={"ZASGI_CURVE_SECRET_KEY": str(tmp_path / "w.key_secret")})  # fmt: skip
    assert worker.returncode == 2 and "--curve-server-key" in worker.stderr


def test_run_ignores_curve_settings_meant_for_the_split(tmp_path: Path) -> None:
    """A shared env file's front-end key alone is half a configuration for `zasgi frontend`;
    `zasgi run` (a private ipc backend, keyless workers) leaves it out and says so."""
    assert _zasgi("keygen", str(tmp_path / "fe")).returncode == 0
    env = {"ZASGI_CURVE_SECRET_KEY": str(tmp_path / "fe.key_secret"), "ZASGI_AUTHORIZED_KEYS": str(tmp_path)}
    server = start_run(tmp_path, workers=1, env=env)
    try:
        assert httpx.get(server.url + "/scope", timeout=30).status_code == 200
        assert "ignoring ZASGI_AUTHORIZED_KEYS, ZASGI_CURVE_SECRET_KEY" in server.logs()
    finally:
        stop(server)


def _tree_pids(proc: Proc) -> set[int]:
    return {proc.pid, *(p.pid for p in proc.descendants())}


def _wait_log(proc: Proc, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in proc.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name}: {text!r} not logged; log:\n{proc.log()[-4000:]}")
        time.sleep(0.05)


def test_only_workers_with_an_authorized_key_join(tmp_path: Path) -> None:
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    keys.mkdir()
    authorized.mkdir()
    for name in ("frontend", "good", "bad"):
        assert _zasgi("keygen", str(keys / name)).returncode == 0
    shutil.copy(keys / "good.key", authorized)
    good_id = (keys / "good.key").read_text().split('public-key = "')[1][:8]
    bad_id = (keys / "bad.key").read_text().split('public-key = "')[1][:8]
    backend = f"tcp://127.0.0.1:{free_tcp_port()}"
    env = {"PROBE_DIR": str(tmp_path)}
    procs: list[Proc] = []
    try:
        fe = Proc("frontend", zasgi("frontend", "--port", "0", "--backend", backend, "--curve-secret-key",
                                    str(keys / "frontend.key_secret"), "--authorized-keys", str(authorized)),
                  tmp_path, env)  # fmt: skip
        procs.append(fe)
        url = fe.wait_for(READY_FRONTEND, 60).group(1)

        def appserver(name: str) -> Proc:
            argv = zasgi("appserver", PROBE, "--connect", backend, "--curve-secret-key",
                         str(keys / f"{name}.key_secret"), "--curve-server-key", str(keys / "frontend.key"))  # fmt: skip
            proc = Proc(name, argv, tmp_path, env)
            procs.append(proc)
            return proc

        bad = appserver("bad")
        good = appserver("good")
        good.wait_for(READY_APPSERVER, 60)
        _wait_log(fe, f"worker from 127.0.0.1 refused: key {bad_id}")
        _wait_log(fe, f"worker from 127.0.0.1 accepted: key {good_id}")
        _wait_log(bad, "refused this worker's CurveZMQ key")
        assert "zasgi appserver ready" not in bad.log()

        with httpx.Client(base_url=url, timeout=30) as client:
            pids = {client.get("/scope").json()["pid"] for _ in range(20)}
        assert pids <= _tree_pids(good) and not pids & _tree_pids(bad)

        # Granting the key is a file copy: the directory is re-read on the next handshake.
        shutil.copy(keys / "bad.key", authorized)
        bad.wait_for(READY_APPSERVER, 30)
        _wait_log(fe, f"worker from 127.0.0.1 accepted: key {bad_id}")
        assert bad.log().count("refused this worker's CurveZMQ key") == 1  # logged once, retried quietly
    finally:
        for proc in reversed(procs):
            proc.kill_tree()
