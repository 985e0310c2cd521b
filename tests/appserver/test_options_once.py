"""Each front-end option is declared once: in wire/frontend_options.py, which builds
``python -m frontend``, ``zasgi frontend`` and ``zasgi run`` and gives frontend/config.py its defaults."""

from __future__ import annotations

import re
from pathlib import Path

from appserver.commands import frontend as frontend_command
from appserver.commands import run as run_command
from frontend import cli as frontend_cli
from frontend import config as cfg
from wire import frontend_options as fo

ROOT = Path(__file__).resolve().parents[2]
# Same spelling, another thing: the worker's own key file, the URL `zasgi status` reads, the
# workers' drain (its default is the table's).
OTHER_MEANING = {("appserver.py", "--curve-secret-key"), ("status.py", "--admin"),
                 ("options.py", "--timeout-graceful-shutdown")}  # fmt: skip


def test_no_long_name_is_in_the_table_twice() -> None:
    names = [name for opt in fo.OPTIONS for name in opt.long_names]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_no_cli_module_declares_a_front_end_option() -> None:
    """A front-end option's name appears in no declaration outside the table."""
    declared = re.compile(r"""(?:click\.option|click\.Option)\(\s*\[?\s*["'](--[a-z-]+)""")
    table = {name for opt in fo.OPTIONS for name in opt.long_names}
    sources = [ROOT / "frontend" / "cli.py", *(ROOT / "appserver" / "commands").glob("*.py")]
    found = {(path.name, name) for path in sources for name in declared.findall(path.read_text())}
    assert not {(file, name) for file, name in found if name in table} - OTHER_MEANING


def test_the_commands_share_env_vars_and_defaults_shown() -> None:
    by_first = {p.opts[0]: p for p in frontend_cli.command.params}
    for command in (run_command.command, frontend_command.command):
        for param in command.params:
            # (run's --backend has its own default; --log-level is the workers' too)
            if param.opts[0] in by_first and param.name not in ("log_level", "backend"):
                assert param.envvar == by_first[param.opts[0]].envvar, param.opts
                assert param.help == by_first[param.opts[0]].help, param.opts


def test_config_defaults_are_the_table_defaults() -> None:
    config = cfg.FrontendConfig()
    assert config.queue.timeout_s == fo.default("queue_timeout")
    assert config.http.max_line_bytes == fo.default("limit_max_line_size")
    assert config.websocket.max_message_bytes == fo.default("ws_max_size")
    assert config.shutdown_timeout_s == fo.default("shutdown_timeout")
    params = frontend_cli.command.make_context("frontend", []).params
    assert frontend_cli.build_config(params).queue == cfg.Queue()  # no other default on the way
