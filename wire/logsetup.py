"""Logging set-up shared by every zasgi process (supervisor, workers, front end).

Not protocol: it lives in ``wire`` only because ``frontend`` and ``appserver`` may not
import each other, and their output must agree (``--log-format json``: one JSON object per
line on every stream, a traceback as the ``exc`` field, so a log shipper reads it all).
Standard library only; a YAML ``--log-config`` imports PyYAML when asked for.

``--log-config FILE`` replaces all of it with the operator's own ``logging.config``
set-up, as uvicorn takes it: ``.json`` or ``.yaml``/``.yml`` (dictConfig), anything
else INI (fileConfig).
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from typing import Any, TextIO


class LogConfigError(ValueError):
    """The --log-config file cannot be used; one line naming it."""


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif told := getattr(record, "traceback", None):  # a traceback told, not raised (the app's part)
            out["exc"] = told
        return json.dumps(out, separators=(",", ":"), default=str)


def json_line(message: str, *, level: str = "info", logger: str = "zasgi") -> str:
    """A line printed outside logging (a banner) as the same JSON object a record would be."""
    record = logging.LogRecord(logger, logging.getLevelName(level.upper()), "", 0, message, None, None)
    return JsonFormatter().format(record)


def configure(
    level: str,
    log_format: str,
    text_format: str,
    *,
    log_config: str | None = None,
    stream: TextIO | None = None,
) -> logging.Handler | None:
    """The root logger: the operator's ``log_config``, or one handler on ``stream`` (stderr) in
    ``log_format``; returns that handler (None with a log config). Raises LogConfigError."""
    if log_config is not None:
        load(log_config)
        return None
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def load(path: str) -> None:
    """Apply a logging configuration file (JSON, YAML or INI). Raises LogConfigError."""
    try:
        if path.endswith(".json"):
            with open(path) as f:
                logging.config.dictConfig(json.load(f))
        elif path.endswith((".yaml", ".yml")):
            import yaml  # PyYAML: only for a YAML file

            with open(path) as f:
                logging.config.dictConfig(yaml.safe_load(f))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ImportError:
        raise LogConfigError(f"--log-config {path}: a YAML file needs PyYAML (pip install pyyaml)") from None
    except OSError as exc:
        raise LogConfigError(f"--log-config {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # json, yaml, configparser and dictConfig each raise their own
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise LogConfigError(f"--log-config {path}: {text}") from None
