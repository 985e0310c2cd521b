"""One real server per framework app and mode (``zasgi run`` or the split over TCP).

A test module calls ``framework_server(mode, tmp_path_factory, APP)`` from a
module-scoped fixture parametrized with ``MODES``; the server is killed (whole
process tree) when the module is done. One worker each: these tests are about
the frameworks working through zasgi, not about the pool.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import Server, start_run, start_split, stop

MODES = ["run", "split"]


def framework_server(
    mode: str,
    tmp_path_factory: pytest.TempPathFactory,
    app: str,
    *run_args: str,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start ``app`` in ``mode`` (run: with ``run_args``; split: ``env`` only); yield it; always stop it."""
    tmp = tmp_path_factory.mktemp(f"{app.split(':')[0].rsplit('.', 1)[-1]}-{mode}")
    if mode == "run":
        server = start_run(tmp, *run_args, workers=1, env=env, app=app)
    else:
        server = start_split(tmp, appservers=1, env=env, app=app)
    try:
        yield server
    finally:
        stop(server)


def ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://", 1) + path
