"""The adaptive limiter (appserver/limiter.py) against a model app, with explicit time.

The model: an app that runs ``parallel`` requests at once in ``base_s`` each and
shares its CPU beyond that (processor sharing), under more demand than any
limit: the limiter's requests are always all running. With ``L`` running,
throughput is ``min(L, parallel) / base_s``, latency ``base_s * max(1, L / parallel)``
and the loop's lag the part of it spent waiting. The limit at which the
worker's own queue holds the target delay is ``parallel * (1 + target / base_s)``.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from appserver.limiter import Limiter, LimiterSettings, share

TICK_S = 0.01


def run(
    limiter: Limiter, parallel: int, base_s: float, windows: int, noise: float, rng: random.Random
) -> list[int]:
    """Drive ``limiter`` with the model for ``windows`` windows; the limit after each window."""
    now, limits, owed = 0.0, [], 0.0
    ticks = round(limiter.settings.window_s / TICK_S)
    for _ in range(windows):
        for _ in range(ticks):
            running = limiter.limit
            latency = base_s * max(1.0, running / parallel)
            owed += min(running, parallel) / base_s * TICK_S
            for _ in range(int(owed)):
                limiter.completed(latency * rng.uniform(1 - noise, 1 + noise))
            owed -= int(owed)
            now += TICK_S
            lag = (latency - base_s) * rng.uniform(1 - noise, 1 + noise)
            limiter.tick(now, lag, running)
        limits.append(limiter.limit)
    return limits


def ideal(parallel: int, base_s: float, target_s: float) -> float:
    return parallel * (1 + target_s / base_s)


apps = st.tuples(st.integers(4, 300), st.sampled_from([0.005, 0.02, 0.05, 0.2]), st.integers(0, 2**32))


@settings(max_examples=25, deadline=None)
@given(app=apps, start_high=st.booleans())
def test_converges_on_the_apps_capacity_from_either_side(
    app: tuple[int, float, int], start_high: bool
) -> None:
    parallel, base_s, seed = app
    s = LimiterSettings(floor=1, ceiling=20_000, initial=20_000 if start_high else 1)
    limits = run(Limiter(s, 0.0), parallel, base_s, 80, 0.1, random.Random(seed))
    want = ideal(parallel, base_s, s.target_s)
    tail = limits[-20:]
    assert 0.6 * want - 2 <= min(tail) and max(tail) <= 1.5 * want + 4, (want, limits)  # +-: whole requests


@settings(max_examples=25, deadline=None)
@given(app=apps, noise=st.floats(0.0, 0.3))
def test_oscillation_stays_bounded(app: tuple[int, float, int], noise: float) -> None:
    parallel, base_s, seed = app
    s = LimiterSettings(floor=1, ceiling=20_000)
    limits = run(Limiter(s, 0.0), parallel, base_s, 120, noise, random.Random(seed))
    tail = limits[-60:]
    assert max(tail) <= 2.5 * min(tail) + 4, limits


@settings(max_examples=25, deadline=None)
@given(app=apps, floor=st.integers(1, 64), initial=st.integers(1, 5000))
def test_never_below_its_floor_nor_above_its_ceiling(
    app: tuple[int, float, int], floor: int, initial: int
) -> None:
    parallel, base_s, seed = app
    s = LimiterSettings(floor=floor, ceiling=2000, initial=initial)
    limits = run(Limiter(s, 0.0), max(1, parallel // 50), base_s * 10, 60, 0.2, random.Random(seed))
    assert all(floor <= limit <= 2000 for limit in limits), limits


def test_a_cpu_bound_app_sits_at_the_floor_an_io_bound_one_far_above() -> None:
    s = LimiterSettings(floor=8, ceiling=4096)
    cpu = run(Limiter(s, 0.0), 1, 0.002, 60, 0.1, random.Random(1))  # 2 ms of CPU each, nothing parallel
    io = run(
        Limiter(s, 0.0), 1500, 0.05, 60, 0.1, random.Random(1)
    )  # 50 ms awaits, the loop saturates at 1500
    assert cpu[-1] == 8
    assert 1500 <= io[-1] <= 2200, io


def test_an_idle_or_unused_limit_stays_where_it_is() -> None:
    limiter = Limiter(LimiterSettings(initial=100), 0.0)
    for i in range(1, 100):  # idle: nothing finishes, nothing runs
        limiter.tick(i * TICK_S, 0.0, 0)
    assert limiter.limit == 100
    for i in range(100, 300):  # light load far under the limit: no evidence to grow on
        for _ in range(5):
            limiter.completed(0.001)
        limiter.tick(i * TICK_S, 0.0, 3)
    assert limiter.limit == 100


def test_lag_alone_brings_the_limit_down() -> None:
    limiter = Limiter(LimiterSettings(initial=1000, floor=4), 0.0)
    for i in range(1, 2000):  # a loop 50 ms late with nothing finishing: a stuck app
        limiter.tick(i * TICK_S, 0.05, 1000)
    assert limiter.limit == 4


def test_settings_are_checked() -> None:
    for bad in ({"floor": 0}, {"floor": 10, "ceiling": 5}, {"target_s": 0.0}):
        try:
            LimiterSettings(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_share_is_even_at_least_and_takes_what_others_leave() -> None:
    assert share(100, [0], 0) == 100
    assert share(100, [10, 10], 0) == 90
    assert share(100, [60, 60], 0) == 50
    assert share(101, [60, 60, 60], 2) == 34
