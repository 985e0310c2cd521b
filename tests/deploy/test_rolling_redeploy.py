"""deploy/compose-rolling-redeploy.sh against a fake docker CLI: new containers first,
old ones stopped (SIGTERM, with their grace period) only once every new one is healthy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .roles import REPO

SCRIPT = REPO / "deploy" / "compose-rolling-redeploy.sh"


class Fake:
    def __init__(self, tmp: Path, running: list[str], new_health: list[str], **extra: Any) -> None:
        self.tmp = tmp
        self.state = tmp / "state.json"
        health = {c: ["healthy"] for c in running}
        self.state.write_text(json.dumps({"running": running, "health": health, "new_health": new_health,
                                          "calls": [], **extra}))  # fmt: skip
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        docker = bin_dir / "docker"
        fake = Path(__file__).with_name("fake_docker.py")
        docker.write_text(f'#!/bin/sh\nexec {sys.executable} {fake} "$@"\n')
        docker.chmod(0o755)
        path = f"{bin_dir}:{os.environ['PATH']}"
        self.env = {**os.environ, "PATH": path, "FAKE_DOCKER_STATE": str(self.state)}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), "--timeout", "10", *args], env=self.env, cwd=self.tmp,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())

    def calls(self, first: str) -> list[list[str]]:
        return [c for c in self.data["calls"] if c[0] == first or c[:2] == ["compose", first]]


def test_new_containers_serve_before_the_old_ones_drain(tmp_path: Path) -> None:
    fake = Fake(tmp_path, ["old0", "old1"], ["starting", "healthy"])
    result = fake.run("--build")
    assert result.returncode == 0, result.stderr
    calls = [c[:2] for c in fake.data["calls"]]
    assert calls.index(["compose", "build"]) < calls.index(["compose", "up"])
    (up,) = fake.calls("up")
    assert up == ["compose", "up", "-d", "--no-deps", "--no-recreate", "--scale", "appserver=4", "appserver"]
    last_inspect = max(i for i, c in enumerate(fake.data["calls"]) if c[0] == "inspect" and "Health" in c[2])
    (stop,) = fake.calls("stop")
    assert fake.data["calls"].index(stop) > last_inspect  # healthy first, then the drain
    assert stop == ["stop", "--time", "40", "old0", "old1"]  # SIGTERM, 40 s before SIGKILL
    assert fake.calls("rm") == [["rm", "old0", "old1"]]
    assert fake.data["running"] == ["new2", "new3"]


def test_grace_period_comes_from_the_container(tmp_path: Path) -> None:
    fake = Fake(tmp_path, ["old0"], ["healthy"], stop_timeout=55)
    assert fake.run("appserver").returncode == 0
    assert fake.calls("stop") == [["stop", "--time", "55", "old0"]]


def test_unhealthy_new_container_rolls_back_and_old_ones_keep_serving(tmp_path: Path) -> None:
    fake = Fake(tmp_path, ["old0", "old1"], ["starting", "unhealthy"])
    result = fake.run()
    assert result.returncode == 1
    said = "new container new2 is unhealthy: removing the new containers, the old ones keep serving"
    assert said in result.stderr
    assert fake.calls("stop") == [["stop", "new2", "new3"]]
    assert fake.data["running"] == ["old0", "old1"]


def test_nothing_running_is_a_clear_error(tmp_path: Path) -> None:
    fake = Fake(tmp_path, [], ["healthy"])
    result = fake.run()
    assert result.returncode == 1 and "no running 'appserver' containers" in result.stderr
    assert fake.calls("up") == []


def test_bad_usage(tmp_path: Path) -> None:
    fake = Fake(tmp_path, ["old0"], ["healthy"])
    result = subprocess.run(["bash", str(SCRIPT), "--timeout", "soon"], env=fake.env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "--timeout needs whole seconds" in result.stderr


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck; .ci/run installs it)")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert os.access(SCRIPT, os.X_OK)
