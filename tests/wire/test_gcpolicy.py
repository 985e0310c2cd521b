"""wire.gcpolicy: a larger young generation replaces CPython's defaults only, never a user's choice."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from wire import gcpolicy


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()


def test_the_front_ends_young_generation_replaces_the_default_and_what_exists_is_frozen() -> None:
    gc.set_threshold(*gcpolicy.CPYTHON_DEFAULT)
    gc.unfreeze()
    assert gcpolicy.settle(gcpolicy.FRONTEND_YOUNG) == (gcpolicy.FRONTEND_YOUNG, 10, 10)
    assert gc.get_freeze_count() > 0


def test_the_app_server_freezes_and_keeps_the_thresholds() -> None:
    gc.set_threshold(*gcpolicy.CPYTHON_DEFAULT)
    assert gcpolicy.settle() == gcpolicy.CPYTHON_DEFAULT


def test_a_users_thresholds_are_kept() -> None:
    gc.set_threshold(1234, 5, 6)
    assert gcpolicy.settle(gcpolicy.FRONTEND_YOUNG) == (1234, 5, 6)


def test_a_disabled_collector_stays_disabled_with_its_thresholds() -> None:
    gc.set_threshold(*gcpolicy.CPYTHON_DEFAULT)
    gc.disable()
    assert gcpolicy.settle(gcpolicy.FRONTEND_YOUNG) == gcpolicy.CPYTHON_DEFAULT
    assert not gc.isenabled()
