"""deploy/systemd/: units that systemd-analyze accepts, env files the CLIs accept, and a
stop that drains (SIGTERM to the main process only, a timeout that covers the drain)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .roles import REPO, SUPERVISOR_MARGIN_S, check_env

UNITS = REPO / "deploy" / "systemd"
ROLES = {"frontend": "zasgi-frontend.service", "appserver": "zasgi-appserver@.service"}


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.strip('"')
    return env


@pytest.mark.parametrize("role", ROLES)
def test_env_files_are_valid_settings(role: str) -> None:
    check_env(role, env_file(UNITS / f"{role}.env"))


@pytest.mark.parametrize("role", ROLES)
def test_stop_drains(role: str) -> None:
    unit = unit_settings(UNITS / ROLES[role])
    assert unit["ExecStart"] == [f"/opt/zasgi/venv/bin/zasgi {role}"]
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    assert unit["User"] == ["zasgi"]
    config = check_env(role, env_file(UNITS / f"{role}.env"))
    if role == "frontend":
        drain = config.shutdown_timeout_s
    else:
        drain = config.graceful_timeout_s + SUPERVISOR_MARGIN_S
    assert drain < float(unit["TimeoutStopSec"][0]) <= drain + 30


def test_appserver_reload_is_the_rolling_restart_and_waits_for_it() -> None:
    unit = unit_settings(UNITS / ROLES["appserver"])
    assert unit["ExecReload"] == ["/opt/zasgi/venv/bin/zasgi reload --timeout 80"]  # --wait is the default
    (pid_file,) = [v.partition("=")[2] for v in unit["Environment"] if v.startswith("ZASGI_PID_FILE=")]
    assert pid_file.startswith("%t/" + unit["RuntimeDirectory"][0] + "/")


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    zasgi = shutil.which("zasgi") or str(Path(sys.executable).with_name("zasgi"))
    names = []
    for role, name in ROLES.items():
        text = (UNITS / name).read_text().replace("/opt/zasgi/venv/bin/zasgi", zasgi)
        text = text.replace("/etc/zasgi/", f"{tmp_path}/")
        name = name.replace("@.", "@blue.")  # a template is verified as an instance
        (tmp_path / name).write_text(text)
        shutil.copy(UNITS / f"{role}.env", tmp_path / f"{role}.env")
        names.append(name)
    argv = [analyze, "verify", *names]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr
