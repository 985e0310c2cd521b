"""The queue's overload policy (frontend/codel.py), with explicit times."""

from __future__ import annotations

import pytest

from frontend.codel import TRANSITIONS, QueueMode, QueuePolicy

NORMAL, ABOVE, OVERLOAD = QueueMode.NORMAL, QueueMode.ABOVE, QueueMode.OVERLOAD


def policy() -> QueuePolicy:
    return QueuePolicy(target_s=0.25, interval_s=1.0, timeout_s=10.0)


def test_a_queue_under_its_target_stays_fifo_with_the_long_timeout() -> None:
    p = policy()
    p.update(5.0, 4.9)
    assert (p.mode, p.lifo, p.wait_s) == (NORMAL, False, 10.0)
    assert p.next_change(4.9) == pytest.approx(5.15, abs=1e-3)  # when the oldest crosses the target


def test_past_the_target_newest_first_then_shedding_after_an_interval() -> None:
    p = policy()
    p.update(5.0, 4.7)  # the oldest waited 0.3 s: above since 4.95
    assert (p.mode, p.lifo, p.wait_s) == (ABOVE, True, 10.0)
    assert p.next_change(4.7) == pytest.approx(5.95)
    p.update(5.9, 4.7)
    assert p.mode is ABOVE  # a burst draining: not yet
    p.update(5.95, 4.7)
    assert (p.mode, p.lifo, p.wait_s, p.overloads) == (OVERLOAD, True, 0.25, 1)
    assert p.next_change(5.8) == pytest.approx(6.05)  # the oldest's shedding time
    p.update(6.5, 6.4)  # shedding keeps the oldest young: still overloaded...
    assert p.mode is OVERLOAD
    p.update(7.0, None)  # ...until the queue empties
    assert (p.mode, p.lifo, p.wait_s) == (NORMAL, False, 10.0)


def test_a_burst_that_drains_in_time_never_sheds() -> None:
    p = policy()
    p.update(1.0, 0.6)
    assert p.mode is ABOVE
    p.update(1.5, None)
    assert p.mode is NORMAL
    p.update(1.6, 1.5)
    assert p.mode is NORMAL


def test_only_the_table_s_transitions_are_allowed() -> None:
    for mode in QueueMode:
        for new in QueueMode:
            p = policy()
            p.mode = mode
            if new in TRANSITIONS[mode]:
                p.to(new)
            else:
                with pytest.raises(ValueError):
                    p.to(new)


def test_it_sheds_only_while_the_queue_stands() -> None:
    p = policy()
    p.update(0.0, None)
    for i in range(130):  # requests keep arriving for 1.3 s, none leaves...
        p.arrived(i * 0.01)
        p.update(i * 0.01, 0.0)
    assert p.mode is OVERLOAD and p.standing and p.sheds  # ...the queue is old and still arriving
    for i in range(50):  # then only drains: nothing comes for a whole interval
        p.departed(1.3 + i * 0.02)
    p.update(2.3, 0.0)
    assert p.mode is OVERLOAD and not p.standing and not p.sheds
    for i in range(150):  # clients that come back as fast as they leave: it stands again
        p.departed(2.3 + i * 0.01)
        p.arrived(2.3 + i * 0.01)
    assert p.standing and p.sheds
