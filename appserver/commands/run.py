"""``zasgi run``: one front end and N workers on this machine.

The front end's options come from its table (wire/frontend_options.py): those ``run`` sets
itself (--host, --port, --root-path, --backend) with their defaults, the rest forwarded
as given; --log-level and --timeout-graceful-shutdown are the workers' too.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from wire import frontend_options as fo

from ..supervisor import Supervisor
from . import options, process

_OWN = [opt.click_option(**({"help": "ZeroMQ endpoint between the tiers [default: a private ipc:// socket]."}
                            if opt.name == "backend" else {}))
        for opt in fo.where(fo.Run.OWN)]  # fmt: skip


@click.command(
    "run", params=[*options.worker_params(), *_OWN, *options.frontend_params(fo.Run.FORWARD)]
)
def command(app: str, host: str, port: int, root_path: str, backend: str | None, **opts: Any) -> None:
    """Serve APP ('module:attribute') with one front end and N workers on this machine."""
    process.setup_logging(opts["log_level"])
    if backend is None:
        runtime = Path(tempfile.gettempdir()) / f"zasgi-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        backend = f"ipc://{runtime}/run-{os.getpid()}.sock"
    config = options.worker_config(app, (backend,), **opts)
    frontend_argv = ["--host", host, "--port", str(port), "--backend", backend, "--root-path", root_path,
                     "--log-level", opts["log_level"], "--shutdown-timeout", str(opts["graceful_timeout"]),
                     *options.frontend_args(opts, fo.Run.FORWARD)]  # fmt: skip
    reload = options.reload_config(opts)
    pool = options.pool_config(opts)
    supervisor = Supervisor(
        config=config, pool=pool, frontend_argv=frontend_argv, frontend_env=_frontend_env(), reload=reload
    )
    workers = opts["workers"]

    def banner(url: str, facts: dict[str, str]) -> str:
        lines = [f"zasgi running on {url} ({workers} worker{'s' if workers > 1 else ''}); Ctrl-C to stop",
                 f"  app      {app} (from {config.app_dir})",
                 f"  backend  {facts.get('backend', backend)}"]  # fmt: skip
        lines += [f"  {key:<8} {value}" for key, value in facts.items() if key != "backend"]
        if reload is not None:
            lines.append(f"  reload   watching {reload.describe()}")
        return "\n".join(lines)

    sys.exit(process.supervise(supervisor, banner=banner))


def _frontend_env() -> dict[str, str]:
    """``run``'s environment for its front end, without the CurveZMQ variables: run's workers
    are its own children on this machine and hold no keys, so a key set for the split tiers
    (a shared env file) would only stop the front end (half a configuration) or shut them out."""
    env = dict(os.environ)
    ignored = sorted(n for n in env if n.startswith("ZASGI_CURVE_") or n == "ZASGI_AUTHORIZED_KEYS")
    for name in ignored:
        del env[name]
    if ignored:
        logging.getLogger(__name__).info(
            "ignoring %s: CurveZMQ is for the split tiers (frontend/appserver), not run", ", ".join(ignored)
        )
    return env
