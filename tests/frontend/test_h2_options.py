"""--http2/--no-http2 and --http2-max-concurrent-streams: declared once, from the command line,
the environment and the config file's defaults."""

from __future__ import annotations

from typing import Any

import pytest

from frontend import config as cfg
from frontend.h2_session import H2Limits
from wire import frontend_options as fo

from .cli_config import build, run_argv


def test_on_by_default_with_the_table_defaults() -> None:
    assert fo.default("http2") is True
    assert cfg.FrontendConfig().http2 == H2Limits(
        max_concurrent_streams=fo.default("http2_max_concurrent_streams")
    )
    assert build([]).http2 == cfg.FrontendConfig().http2


def test_off_and_stream_limit_from_the_command_line() -> None:
    assert build(["--no-http2"]).http2 is None
    limits = build(["--http2-max-concurrent-streams", "7"]).http2
    assert limits is not None and limits.max_concurrent_streams == 7


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZASGI_HTTP2", "false")
    assert build([]).http2 is None
    monkeypatch.setenv("ZASGI_HTTP2", "true")
    monkeypatch.setenv("ZASGI_HTTP2_MAX_CONCURRENT_STREAMS", "12")
    limits = build([]).http2
    assert limits is not None and limits.max_concurrent_streams == 12


def test_a_bad_stream_limit_is_a_usage_error() -> None:
    import click

    with pytest.raises(click.BadParameter):
        build(["--http2-max-concurrent-streams", "0"])


def test_zasgi_run_passes_them_on_from_a_config_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = run_argv(tmp_path, monkeypatch, "http2 = false\nhttp2-max-concurrent-streams = 50\n")
    assert "--no-http2" in argv
    assert argv[argv.index("--http2-max-concurrent-streams") + 1] == "50"
