"""What the deploy files may configure: the ZASGI_* variables the two CLIs read.

``check_env(role, env)`` parses ``env`` exactly as ``zasgi frontend`` /
``zasgi appserver`` would at start-up (click's envvar handling, then the config
objects' validation), so a typo'd or invalid setting in a manifest fails here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import click

from appserver.commands import appserver as appserver_command
from appserver.commands import options as appserver_options
from frontend import cli as frontend_cli

REPO = Path(__file__).resolve().parents[2]
COMMANDS: dict[str, click.Command] = {"frontend": frontend_cli.command, "appserver": appserver_command.command}
# The supervisor gives draining workers the graceful timeout plus this much before it kills them.
SUPERVISOR_MARGIN_S = 5.0


def known_envvars(role: str) -> set[str]:
    names: set[str] = set()
    for param in COMMANDS[role].params:
        envvar = param.envvar
        names.update([envvar] if isinstance(envvar, str) else list(envvar or ()))
    return names


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZASGI_")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        yield


def check_env(role: str, env: Mapping[str, str]) -> Any:
    """The config ``env`` gives ``role``; AssertionError naming the problem."""
    unknown = sorted(set(env) - known_envvars(role))
    assert not unknown, f"{role}: not a `zasgi {role}` variable: {unknown}"
    command = COMMANDS[role]
    with _environment(env):
        try:
            params = command.make_context(role, [], resilient_parsing=False).params
            if role == "frontend":
                return frontend_cli.build_config(params)
            return appserver_options.worker_config(params.pop("app"), params.pop("connect"), **params)
        except (click.ClickException, click.exceptions.Exit) as exc:
            raise AssertionError(f"{role}: {env} is rejected: {exc}") from None


def duration_s(text: str | int | float) -> float:
    """A compose duration ("1m30s", "40s", "500ms") or plain seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def tcp_host_port(endpoint: str) -> tuple[str, int]:
    assert endpoint.startswith("tcp://"), endpoint
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    return host, int(port)
