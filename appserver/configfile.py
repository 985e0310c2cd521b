"""``--config FILE`` (env ``ZASGI_CONFIG``): a TOML file of option values -> click ``default_map``.

Precedence is click's own: command line > ``ZASGI_*`` environment > the file
> built-in defaults (``default_map`` sits between the environment and the
defaults), so nothing here re-implements it.

Layout: keys are option names, with dashes or underscores (``max-requests``,
``max_requests``; the positional ``app`` too); uvicorn-style aliases work as
keys as well. Keys may sit at the top level (they apply to every command that
has the option) and/or in a section per command::

    workers = 4                # top level: any command with --workers
    [frontend]                 # zasgi frontend, and zasgi run (which runs one)
    queue-size = 500
    [appserver]                # zasgi appserver, and zasgi run
    connect = ["tcp://fe:7000"]
    [run]                      # zasgi run only; wins over the two above
    port = 8080

A key that no zasgi command knows, a key in a section whose command lacks it,
an unknown section, or a table where a value belongs is a one-line error
naming the key (exit 2): a typo must never silently fall back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import click

# Which sections a command reads, lowest precedence first (the top level comes before all).
SECTIONS: dict[str, tuple[str, ...]] = {
    "run": ("frontend", "appserver", "run"),
    "appserver": ("appserver",),
    "frontend": ("frontend",),
}


class ConfigError(click.ClickException):
    """One line (``Error: config file F: ...``), exit status 2 like any usage error."""

    exit_code = 2


class Schema:
    """The keys one command accepts: every long option name (dashes) -> its click parameter."""

    def __init__(self, params: Sequence[click.Parameter]) -> None:
        self.params: dict[str, click.Parameter] = {}
        for param in params:
            if param.name in (None, "help", "version", "config"):
                continue
            names = [o for o in param.opts if o.startswith("--")] if isinstance(param, click.Option) else []
            for name in [*names, param.name]:
                self.params.setdefault(normalize(name), param)

    def __contains__(self, key: str) -> bool:
        return normalize(key) in self.params

    def param(self, key: str) -> click.Parameter:
        return self.params[normalize(key)]


def normalize(key: str) -> str:
    return key.lstrip("-").replace("_", "-").lower()


def read(path: str) -> dict[str, Any]:
    """The parsed file; any failure to read or parse is a ConfigError."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None


def values_for(path: str, command: str, schemas: Mapping[str, Schema]) -> dict[str, Any]:
    """The option values ``command`` takes from the file, keyed by click parameter name.

    The whole file is checked against every command's schema, so a typo fails
    whichever command reads the file first.
    """
    data = read(path)
    _check(path, data, schemas)
    result: dict[str, Any] = {}
    layers = [data, *(data.get(section, {}) for section in SECTIONS[command])]
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) or key not in schemas[command]:
                continue  # a section, or a key meant for another command
            param = schemas[command].param(key)
            assert param.name is not None
            result[param.name] = _value(path, key, value, param)
    return result


def _check(path: str, data: dict[str, Any], schemas: Mapping[str, Schema]) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in schemas:
                known = ", ".join(f"[{name}]" for name in schemas)
                raise ConfigError(f"config file {path}: unknown section [{key}] (known: {known})")
            for inner, inner_value in value.items():
                if isinstance(inner_value, dict):
                    raise ConfigError(f"config file {path}: [{key}] {inner}: a table where a value belongs")
                if inner not in schemas[key]:
                    raise ConfigError(f"config file {path}: unknown key {inner!r} in [{key}]")
        elif not any(key in schema for schema in schemas.values()):
            raise ConfigError(f"config file {path}: unknown key {key!r}")


def _value(path: str, key: str, value: Any, param: click.Parameter) -> Any:
    if param.multiple or param.nargs == -1:
        value = value if isinstance(value, list) else [value]
    elif isinstance(value, list):
        raise ConfigError(f"config file {path}: {key}: one value expected, not a list")
    try:  # checked here, so a bad value names the file it came from (click would not)
        param.type_cast_value(click.Context(click.Command(key)), value)
    except click.BadParameter as exc:
        raise ConfigError(f"config file {path}: {key}: {exc.message}") from None
    return value
