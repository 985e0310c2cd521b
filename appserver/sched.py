"""The CPU scheduling policy zasgi's processes ask for: SCHED_BATCH, on Linux.

OS process policy, set by the supervisor (``zasgi run``/``appserver``) and by ``zasgi frontend``
on their main thread before they start their children or exec: a scheduling policy is
inherited across fork and exec, so the front end and the workers (and every thread they
start) run under it without calling this themselves.

Why. A request crosses four threads (the front end, its ZeroMQ I/O thread, the
app server's I/O thread, the app server) and every hand-off wakes the next one
with an eventfd write. Under the default policy the woken thread preempts the
thread that woke it, which resumes a few microseconds later: two context
switches for one hand-off, although the waker was about to block in its event
loop's ``epoll_wait`` anyway. A SCHED_BATCH thread does not preempt when it
wakes; it runs on an idle core, or once the running thread blocks or its slice
ends. Measured on 2 cores, hello world (tests/benchmarks/README.md):
involuntary switches 0.10 -> 0.02 per request per process, CPU 41 -> 39 µs
per request, 5-7% more req/s, p99 no worse. Nice values and time slices do not
change, and no privilege is needed; ``--no-sched-batch`` keeps the default.

Called on the main thread before any other starts: threads inherit the policy
(ZeroMQ's I/O thread, libuv's pool), and so do child processes.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def use_batch_scheduling() -> str | None:
    """Put the calling thread under SCHED_BATCH. None when done, else why not (also logged at
    debug: the process runs on under the policy it has)."""
    why_not = _try_batch()
    if why_not is not None:
        log.debug("default CPU scheduling: %s", why_not)
    return why_not


def _try_batch() -> str | None:
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or not hasattr(os, "sched_setscheduler"):
        return "SCHED_BATCH is Linux-only"
    try:
        current = os.sched_getscheduler(0)
        if current == batch:
            return None
        if current != os.SCHED_OTHER:  # a real-time or idle policy someone chose: leave it
            return f"the process already runs under scheduling policy {current}"
        os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError as exc:  # a seccomp profile may forbid it: run under the default
        return f"sched_setscheduler: {exc.strerror or exc}"
    return None
