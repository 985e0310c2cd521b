"""appserver.sched: SCHED_BATCH for the calling thread, and only from the default policy."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from appserver.sched import use_batch_scheduling

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux's")


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a fresh thread: a policy change stays with that thread, not the test runner."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return out[0]


def test_the_calling_thread_moves_to_batch_and_a_second_call_is_a_no_op() -> None:
    def body() -> tuple[Any, int, Any, int]:
        first = use_batch_scheduling()
        policy = os.sched_getscheduler(0)
        return first, policy, use_batch_scheduling(), os.sched_getscheduler(0)

    assert _in_thread(body) == (None, os.SCHED_BATCH, None, os.SCHED_BATCH)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the test runner's thread is untouched


def test_threads_started_afterwards_inherit_it() -> None:
    def body() -> int:
        assert use_batch_scheduling() is None
        return _in_thread(lambda: os.sched_getscheduler(0))

    assert _in_thread(body) == os.SCHED_BATCH


def test_a_policy_someone_else_chose_is_left_alone() -> None:
    def body() -> tuple[Any, int]:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # (allowed without privileges)
        return use_batch_scheduling(), os.sched_getscheduler(0)

    why_not, policy = _in_thread(body)
    assert policy == os.SCHED_IDLE
    assert why_not == f"the process already runs under scheduling policy {os.SCHED_IDLE}"


def test_a_refusal_is_a_reason_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert _in_thread(use_batch_scheduling) == "sched_setscheduler: Operation not permitted"
