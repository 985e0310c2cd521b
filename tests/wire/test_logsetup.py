"""wire.logsetup: --log-config in its three formats, one-line errors, the JSON record shape."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from wire import logsetup

YAML = """\
version: 1
disable_existing_loggers: false
handlers:
  file: {class: logging.FileHandler, filename: OUT}
loggers:
  zasgi.test: {level: INFO, handlers: [file], propagate: false}
"""
INI = """\
[loggers]
keys=root,test
[handlers]
keys=file
[formatters]
keys=
[logger_root]
handlers=
[logger_test]
qualname=zasgi.test
level=INFO
handlers=file
propagate=0
[handler_file]
class=FileHandler
args=('OUT',)
"""


@pytest.fixture
def clean() -> Iterator[None]:
    yield
    logger = logging.getLogger("zasgi.test")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


@pytest.mark.parametrize(("name", "text"), [("log.yaml", YAML), ("log.ini", INI),
                                            ("log.json", None)])  # fmt: skip
def test_each_format_configures_logging(tmp_path: Path, clean: None, name: str, text: str | None) -> None:
    out = tmp_path / "out.log"
    path = tmp_path / name
    if text is None:
        text = json.dumps({"version": 1, "disable_existing_loggers": False,
                           "handlers": {"file": {"class": "logging.FileHandler", "filename": "OUT"}},
                           "loggers": {"zasgi.test": {"level": "INFO", "handlers": ["file"],
                                                      "propagate": False}}})  # fmt: skip
    path.write_text(text.replace("OUT", str(out)))
    logsetup.configure("warning", "text", "%(message)s", log_config=str(path))
    logging.getLogger("zasgi.test").info("hello %s", name)
    for handler in logging.getLogger("zasgi.test").handlers:
        handler.flush()
    assert f"hello {name}" in out.read_text()


def test_a_missing_or_broken_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(logsetup.LogConfigError, match=r"--log-config .*nope.json: No such file"):
        logsetup.load(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\n")
    with pytest.raises(logsetup.LogConfigError, match="bad.yaml: Unsupported version: 2"):
        logsetup.load(str(bad))


def test_json_record_has_the_traceback_as_a_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "", 0, "failed %s", ("here",), exc_info=True)
        import sys

        record.exc_info = sys.exc_info()
    out = json.loads(logsetup.JsonFormatter().format(record))
    assert out["message"] == "failed here" and out["level"] == "error"
    assert "ValueError: boom" in out["exc"] and "\n" not in logsetup.JsonFormatter().format(record)
