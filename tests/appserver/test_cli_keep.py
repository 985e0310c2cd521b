"""--timeout-stream-drain and --max-lingering: command line, ZASGI_* variable, config file, defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appserver import cli
from appserver.commands import process
from appserver.supervisor import Supervisor


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Supervisor]:
    """The supervisors the commands build; none starts."""
    made: list[Supervisor] = []

    def supervise(supervisor: Supervisor, *, banner: Any) -> int:
        made.append(supervisor)
        return 0

    monkeypatch.setattr(process, "supervise", supervise)
    return made


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, list(args), env=env)


def test_defaults(built: list[Supervisor]) -> None:
    assert invoke("appserver", "m:app", "--connect", "ipc:///tmp/x", "--workers", "3").exit_code == 0
    (sup,) = built
    assert sup.config.stream_drain_timeout_s == 3600.0 and sup.pool.max_lingering == 12  # 4 x --workers


def test_command_line_environment_and_config_file(built: list[Supervisor], tmp_path: Path) -> None:
    assert invoke("run", "m:app", "--timeout-stream-drain", "90", "--max-lingering", "2").exit_code == 0
    env = {"ZASGI_TIMEOUT_STREAM_DRAIN": "0", "ZASGI_MAX_LINGERING": "0"}
    assert invoke("appserver", "m:app", "--connect", "ipc:///tmp/x", env=env).exit_code == 0
    config = tmp_path / "zasgi.toml"
    config.write_text("timeout-stream-drain = 600\n[appserver]\nmax_lingering = 7\n")
    assert invoke("appserver", "m:app", "--connect", "ipc:///tmp/x", "-c", str(config)).exit_code == 0
    got = [(s.config.stream_drain_timeout_s, s.pool.max_lingering) for s in built]
    assert got == [(90.0, 2), (0.0, 0), (600.0, 7)]


@pytest.mark.parametrize("args", [["--timeout-stream-drain", "-1"], ["--max-lingering", "-2"]])
def test_bad_values_are_usage_errors(built: list[Supervisor], args: list[str]) -> None:
    result = invoke("run", "m:app", *args)
    assert result.exit_code == 2 and args[0] in result.output and not built
