"""What the front end's options become: its config from a command line (``build``), and the
front ends' command line that ``zasgi run`` builds from a config file (``run_argv``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from frontend import cli
from frontend import config as cfg


def build(args: list[str]) -> cfg.FrontendConfig:
    """``zasgi frontend ARGS``' config (the environment counts too)."""
    return cli.build_config(cli.command.make_context("frontend", args).params)


def run_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_text: str) -> list[str]:
    """The front ends' argv of ``zasgi run a:b -c FILE``, FILE holding ``config_text``; nothing starts."""
    from click.testing import CliRunner

    from appserver import cli as zasgi_cli
    from appserver.commands import process

    seen: list[Any] = []
    monkeypatch.setattr(process, "supervise", lambda supervisor, *, banner: seen.append(supervisor) or 0)
    monkeypatch.setattr(process, "setup_logging", lambda *args: None)
    path = tmp_path / "zasgi.toml"
    path.write_text(config_text)
    result = CliRunner().invoke(zasgi_cli.main, ["run", "a:b", "-c", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return list(seen[0].fleet.argv)  # (appserver/fleet.py)
