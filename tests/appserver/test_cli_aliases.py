"""uvicorn's option names on ``zasgi run``, and ``run`` forwarding every front-end option.

The front end's options are declared once (wire/frontend_options.py); ``python -m frontend``,
``zasgi frontend`` and ``zasgi run`` are all built from that table.
"""

from __future__ import annotations

from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from appserver import cli
from appserver.commands import options as command_options
from appserver.commands import run as run_command
from frontend import cli as frontend_cli
from tests.integration.conftest import start_run, stop
from wire import frontend_options as fo

# uvicorn options whose meaning zasgi shares; each must be accepted by `zasgi run` as spelled.
UVICORN_RUN_OPTIONS = [
    "--host", "--port", "--workers", "--reload", "--reload-dir", "--reload-include", "--reload-exclude",
    "--root-path", "--timeout-keep-alive", "--timeout-graceful-shutdown", "--log-level",
    "--limit-max-requests", "--app-dir", "--factory", "--lifespan", "--interface",
    "--ws-max-size", "--ws-ping-interval", "--ws-ping-timeout", "--ws-per-message-deflate",
]  # fmt: skip
# The same, where the front end has them (its HTTP-edge and observability options).
UVICORN_FRONTEND_OPTIONS = [
    "--proxy-headers", "--forwarded-allow-ips", "--limit-concurrency", "--access-log",
    "--ssl-keyfile", "--ssl-certfile", "--ssl-keyfile-password", "--ssl-ca-certs", "--ssl-cert-reqs",
    "--ssl-ciphers",
]  # fmt: skip
# The front end's process contract with its parent, not options for users.
INTERNAL = {o.long_names[0] for o in fo.where(fo.Run.INTERNAL)}  # --ready-fd, --parent-fd, --handoff-path
RUN_SPELLS_IT = {"--shutdown-timeout"}  # run: --timeout-graceful-shutdown, the workers' and the front end's


def _long_opts(params: list[click.Parameter]) -> set[str]:
    names: set[str] = set()
    for param in params:
        if isinstance(param, click.Option):
            names.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
    return names


def _frontend_opts() -> set[str]:
    return _long_opts(frontend_cli.command.params)


def test_run_help_lists_the_uvicorn_names() -> None:
    result = CliRunner().invoke(cli.main, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    wanted = UVICORN_RUN_OPTIONS + [o for o in UVICORN_FRONTEND_OPTIONS if o in _frontend_opts()]
    missing = [o for o in wanted if o not in result.output]
    assert not missing, result.output


def test_run_forwards_every_frontend_option() -> None:
    """Every front-end option but the split's and the internal ones is an option of `zasgi run`."""
    split = _long_opts([o.click_option() for o in fo.where(fo.Run.SPLIT)])
    wanted = _frontend_opts() - INTERNAL - RUN_SPELLS_IT - split
    missing = sorted(wanted - _long_opts(run_command.command.params))
    assert not missing, missing


def test_forwarded_options_keep_the_frontend_shape() -> None:
    """Same flag-ness, repeatability and environment variable as in the front end."""
    theirs = {p.opts[0]: p for p in frontend_cli.command.params if isinstance(p, click.Option)}
    for ours in command_options.frontend_params(fo.Run.FORWARD):
        other = theirs[ours.opts[0]]
        assert (ours.is_flag, ours.multiple, bool(ours.secondary_opts)) == (
            other.is_flag, other.multiple, bool(other.secondary_opts)), ours.opts  # fmt: skip
        assert ours.envvar == other.envvar, ours.opts


def test_frontend_accepts_the_uvicorn_shutdown_name() -> None:
    assert "--timeout-graceful-shutdown" in _frontend_opts()


def test_forwarded_argv_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    opts = {p.name: None for p in command_options.frontend_params(fo.Run.FORWARD)}
    opts.update(queue_size=5, insecure=True, ws_per_message_deflate=False, workers=2)
    args = command_options.frontend_args(opts, fo.Run.FORWARD)
    assert args == ["--insecure", "--queue-size", "5", "--no-ws-per-message-deflate"]
    assert opts == {"workers": 2}  # the worker options stay


@pytest.mark.integration
def test_run_starts_with_uvicorn_style_options(tmp_path: Path) -> None:
    extra = ["--root-path", "/api", "--timeout-keep-alive", "3", "--timeout-graceful-shutdown", "5",
             "--log-level", "warning", "--limit-max-requests", "1000", "--host", "127.0.0.1",
             "--ws-max-size", "65536", "--lifespan", "on", "--app-dir", "."]  # fmt: skip
    fe = _frontend_opts()
    if "--proxy-headers" in fe and "--forwarded-allow-ips" in fe:
        extra += ["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"]
    if "--limit-concurrency" in fe:
        extra += ["--limit-concurrency", "100"]
    server = start_run(tmp_path, *extra, workers=1)
    try:
        scope = httpx.get(server.url + "/api/scope", timeout=30).json()
        assert scope["root_path"] == "/api"
        assert server.procs[0].log().count("zasgi running on") == 1
    finally:
        stop(server)
