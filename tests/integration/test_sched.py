"""`zasgi run` puts its front end and workers (every thread) under SCHED_BATCH; --no-sched-batch does not.

appserver/sched.py says why (set by the supervisor, inherited) (measured: fewer context switches per request, more req/s).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import start_run, stop

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux's"),
]


def _policies(supervisor_pid: int) -> dict[str, set[int]]:
    """The scheduling policies of every thread of the front end and of the workers."""
    out: dict[str, set[int]] = {"frontend": set(), "worker": set()}
    for child in psutil.Process(supervisor_pid).children(recursive=True):
        cmdline = " ".join(child.cmdline())
        role = "frontend" if "-m frontend" in cmdline else "worker" if "spawn_main" in cmdline else None
        if role is not None:
            out[role] |= {os.sched_getscheduler(t.id) for t in child.threads()}
    return out


@pytest.mark.parametrize(("flag", "policy"), [(None, "SCHED_BATCH"), ("--no-sched-batch", "SCHED_OTHER")])
def test_run_sets_the_policy_of_every_thread(tmp_path: Path, flag: str | None, policy: str) -> None:
    server = start_run(tmp_path, *([flag] if flag else []), workers=1)
    try:
        assert httpx.get(server.url + "/", timeout=10).status_code == 200  # serving, threads started
        assert _policies(server.procs[0].pid) == {
            "frontend": {getattr(os, policy)},
            "worker": {getattr(os, policy)},
        }, server.logs()
    finally:
        stop(server)
