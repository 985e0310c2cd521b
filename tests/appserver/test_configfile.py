"""``--config FILE``: TOML -> default_map, precedence CLI > env > file > defaults, one-line errors.

The commands are the real ones (``zasgi run`` / ``appserver``) with the process part
replaced by a recorder, so the wiring is tested without starting anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appserver import cli
from appserver.commands import process


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Supervisors the commands would have run (nothing starts)."""
    seen: list[Any] = []

    def fake_supervise(supervisor: Any, *, banner: Any) -> int:
        seen.append(supervisor)
        return 0

    monkeypatch.setattr(process, "supervise", fake_supervise)
    monkeypatch.setattr(process, "setup_logging", lambda *args: None)
    for name in list(os.environ):
        if name.startswith("ZASGI_"):
            monkeypatch.delenv(name)
    return seen


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "zasgi.toml"
    path.write_text(text)
    return str(path)


def frontend_arg(supervisor: Any, name: str) -> str | None:
    argv = list(supervisor.fleet.argv)  # zasgi run's front ends (appserver/fleet.py)
    return argv[argv.index(name) + 1] if name in argv else None


# ---------------------------------------------------------------- precedence


def test_file_values_replace_defaults(tmp_path: Path, started: list[Any]) -> None:
    path = write(tmp_path, 'app = "tests.apps.probe:app"\nworkers = 3\nmax_requests = 50\nport = 9123\n')
    result = invoke("run", "--config", path)
    assert result.exit_code == 0, result.output
    (sup,) = started
    assert sup.config.app == "tests.apps.probe:app"
    assert (sup.pool.workers, sup.pool.max_requests) == (3, 50)
    assert frontend_arg(sup, "--port") == "9123"


def test_precedence_cli_over_env_over_file(tmp_path: Path, started: list[Any]) -> None:
    path = write(tmp_path, "workers = 3\ncapacity = 7\nmax-surge = 2\n")
    result = invoke("run", "a:b", "--workers", "5", env={"ZASGI_CONFIG": path, "ZASGI_WORKERS": "4",
                                                          "ZASGI_CAPACITY": "9"})  # fmt: skip
    assert result.exit_code == 0, result.output
    (sup,) = started
    assert sup.pool.workers == 5  # command line
    assert sup.config.capacity == 9  # environment over file
    assert sup.pool.max_surge == 2  # file over default


def test_sections_layer_per_command(tmp_path: Path, started: list[Any]) -> None:
    path = write(tmp_path, """
workers = 2
[frontend]
queue-size = 11
timeout_keep_alive = 3.5
[appserver]
workers = 6
connect = "tcp://127.0.0.1:7000"
[run]
workers = 4
""")  # fmt: skip
    assert invoke("run", "a:b", "-c", path).exit_code == 0
    assert invoke("appserver", "a:b", "-c", path).exit_code == 0
    run_sup, app_sup = started
    assert run_sup.pool.workers == 4  # [run] wins over [appserver] and the top level
    assert frontend_arg(run_sup, "--queue-size") == "11"  # [frontend] reaches run's front end
    assert frontend_arg(run_sup, "--timeout-keep-alive") == "3.5"
    assert app_sup.pool.workers == 6
    assert app_sup.config.connect == ("tcp://127.0.0.1:7000",)  # a string for a repeatable option


def test_flags_lists_and_aliases(tmp_path: Path, started: list[Any]) -> None:
    path = write(tmp_path, f"""
factory = true
limit-max-requests = 9
ws-per-message-deflate = false
reload = true
reload-dir = ["{tmp_path}"]
reload_include = ["*.py", "*.toml"]
""")  # fmt: skip
    result = invoke("run", "a:b", "-c", path)
    assert result.exit_code == 0, result.output
    (sup,) = started
    assert sup.config.factory is True
    assert sup.pool.max_requests == 9
    assert "--no-ws-per-message-deflate" in sup.fleet.argv
    assert sup.reload.dirs == (str(tmp_path.resolve()),)
    assert sup.reload.include == ("*.py", "*.toml")


def test_default_when_nothing_given(started: list[Any]) -> None:
    assert invoke("run", "a:b").exit_code == 0
    (sup,) = started
    assert sup.pool.workers == 1 and sup.reload is None
    assert frontend_arg(sup, "--queue-size") is None  # the front end keeps its own default


# ---------------------------------------------------------------- errors: one line, exit 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wrokers = 2\n", "unknown key 'wrokers'"),
        ("[run]\nconnect = 'tcp://x:1'\n", "unknown key 'connect' in [run]"),
        ("[frontend]\nworkers = 2\n", "unknown key 'workers' in [frontend]"),
        ("[appserver]\nport = 1\n", "unknown key 'port' in [appserver]"),
        ("[runn]\nport = 1\n", "unknown section [runn]"),
        ("[run.ssl]\nkey = 1\n", "[run] ssl: a table where a value belongs"),
        ("workers = [1, 2]\n", "workers: one value expected, not a list"),
        ("workers = \n", "Invalid value (at line 1"),
        ("workers = 'many'\n", "workers: 'many' is not a valid integer"),
        ("[frontend]\nqueue-size = 'x'\n", "queue-size: 'x' is not a valid integer"),
        ("[run]\nuds-mode = '999'\n", "uds-mode: '999' is not an octal file mode"),
        ("log-format = 'xml'\n", "log-format: 'xml' is not one of 'text', 'json'"),
        ("[frontend]\nliveness = 1\n", "liveness: 1 is not in the range x>=2"),
    ],
)
def test_bad_file_is_one_line_exit_2(tmp_path: Path, started: list[Any], text: str, message: str) -> None:
    path = write(tmp_path, text)
    result = invoke("run", "a:b", "--config", path)
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0, result.output
    assert message in result.output and path in result.output
    assert not started


def test_missing_file(tmp_path: Path, started: list[Any]) -> None:
    result = invoke("appserver", "a:b", "--connect", "tcp://127.0.0.1:1", "-c", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert "No such file or directory" in result.output


def test_a_key_for_another_command_is_fine_at_the_top_level(tmp_path: Path, started: list[Any]) -> None:
    path = write(tmp_path, "connect = 'tcp://127.0.0.1:7000'\nqueue-size = 5\n")
    assert invoke("run", "a:b", "-c", path).exit_code == 0  # connect: appserver's; ignored by run
    assert frontend_arg(started[0], "--queue-size") == "5"


# ---------------------------------------------------------------- zasgi frontend: file -> front-end argv


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv `zasgi frontend` would exec the front end with (nothing is exec'd)."""
    seen: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: seen.append(argv[3:]))  # after `python -m frontend`
    for name in list(os.environ):
        if name.startswith("ZASGI_"):
            monkeypatch.delenv(name)
    return seen


def test_frontend_config_file_env_and_command_line(tmp_path: Path, execs: list[list[str]]) -> None:
    path = write(tmp_path, """
workers = 3
[frontend]
port = 8123
queue-size = 5
insecure = true
timeout-graceful-shutdown = 4
root-path = "/api"
""")  # fmt: skip
    result = invoke("frontend", "--log-level", "debug", "--config", path, "--root-path", "/x",
                    env={"ZASGI_QUEUE_SIZE": "6", "ZASGI_SCHED_BATCH": "false"})  # fmt: skip
    assert result.exit_code == 0, result.output
    (argv,) = execs
    args = {name: argv[i + 1] for i, name in enumerate(argv[:-1]) if name.startswith("--")}
    assert args["--port"] == "8123"  # from the file
    assert args["--queue-size"] == "6"  # the environment wins over the file
    assert args["--root-path"] == "/x"  # the command line wins over both
    assert args["--log-level"] == "debug"
    assert args["--shutdown-timeout"] == "4.0"  # the uvicorn alias, as the front end's option
    assert "--insecure" in argv
    assert "--workers" not in argv and "--sched-batch" not in argv  # not front-end options
    assert "--queue-timeout" not in argv  # not given: the front end's own default holds


def test_frontend_config_errors(tmp_path: Path, execs: list[list[str]]) -> None:
    path = write(tmp_path, "[frontend]\nmax-requests = 3\n")
    result = invoke("frontend", f"--config={path}")
    assert result.exit_code == 2 and "unknown key 'max-requests' in [frontend]" in result.output
    assert invoke("frontend", "-c").exit_code == 2
    assert not execs
