from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import Proc


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start real processes; every one is killed (tree and all) at teardown."""
    procs: list[Proc] = []

    def _spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, tmp_path, env)
        procs.append(proc)
        return proc

    yield _spawn
    for proc in reversed(procs):
        proc.kill_tree()
