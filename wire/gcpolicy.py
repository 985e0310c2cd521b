"""How a zasgi process uses Python's cyclic garbage collector once it is ready to serve.

Both kinds of process (front end, app server) call ``settle()`` when ready:

- ``gc.freeze()``: what was built up to then (imported modules, the app, the
  framework) lives as long as the process, so a full collection no longer
  walks it (~16 ms for the front end's modules alone, longer for a framework).
- The front end also gets a larger youngest generation (``FRONTEND_YOUNG``),
  when the thresholds are still CPython's defaults. With thousands of
  requests in flight (3,000 clients, each request held 50 ms by the app:
  ``bench.py --cases io-burst``), every object a request holds outlives the
  default 700-allocation young generation, is promoted, and soon triggers
  full collections of everything in flight: 14-30% of the front end's CPU
  went to the collector there; with a young generation of 50,000, ~3 µs per
  request instead of ~9-22 (gc callbacks' process time, same load). The
  front end's request path makes no reference cycles
  (tests/frontend/test_no_cycles.py), so nothing waits for the collector.
- The app server keeps CPython's thresholds: it runs the user's code, whose
  cycles may hold request bodies; a young generation 70x larger could keep
  70x more of them alive between collections. An app that sets its own
  thresholds at import keeps them.
"""

from __future__ import annotations

import gc

CPYTHON_DEFAULT = (700, 10, 10)
FRONTEND_YOUNG = 50_000  # only the youngest generation grows; the older two keep their ratios


def settle(young: int | None = None) -> tuple[int, int, int]:
    """Freeze what exists now; with ``young``, size the youngest generation to it if the
    thresholds are still CPython's defaults. Returns the thresholds in use."""
    gc.freeze()
    if young is not None and gc.isenabled() and gc.get_threshold() == CPYTHON_DEFAULT:
        gc.set_threshold(young, *CPYTHON_DEFAULT[1:])
    return gc.get_threshold()
