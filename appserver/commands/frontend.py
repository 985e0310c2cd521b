"""``zasgi frontend``: run a front end (HTTP listener + backend endpoint), as ``python -m frontend``.

Its options are the front end's table (wire/frontend_options.py) as given here, from the
command line, ``ZASGI_*`` or ``--config``; only the given ones are passed on, so the front end's
defaults hold for the rest. The CPU policy (--sched-batch) is set here, before the exec: the
front end inherits it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from wire import frontend_options as fo

from .. import sched
from . import options

_PASSED = (fo.Run.OWN, fo.Run.FORWARD, fo.Run.WORKER, fo.Run.SPLIT)


@click.command(
    "frontend",
    params=[options.config_option(), *options.frontend_params(*_PASSED), options.sched_batch_option()],
)
def command(**opts: Any) -> None:
    """Run a front end: HTTP in, wire events to the app-server workers that connect to its --backend."""
    argv = options.frontend_args(opts, *_PASSED)
    if opts["sched_batch"]:
        sched.use_batch_scheduling()  # before exec: the front end and its threads inherit it
    os.execv(sys.executable, [sys.executable, "-m", "frontend", *argv])
