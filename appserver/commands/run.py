"""``zasgi run``: N front ends (one by default) and N workers on this machine (appserver/fleet.py).

The front end's options come from its table (wire/frontend_options.py): those ``run`` sets
itself (--host, --port, --root-path, --backend) with their defaults, the rest forwarded
as given; --log-level and --timeout-graceful-shutdown are the workers' too.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from wire import frontend_options as fo

from .. import fleet, listeners
from ..supervisor import Supervisor
from . import options, process

EXIT_USAGE = 2

_OWN = [opt.click_option(**({"help": "ZeroMQ endpoint between the tiers [default: a private ipc:// socket]."}
                            if opt.name == "backend" else {}))
        for opt in fo.where(fo.Run.OWN)]  # fmt: skip


_FLEET = [
    click.Option(["--frontends"], default=1, show_default=True, type=int, envvar="ZASGI_FRONTENDS",
                 show_envvar=True,
                 help="Front-end processes on the one port (SO_REUSEPORT; Linux): HTTP on that many cores, "
                      "every worker joined to each. SIGUSR2 (zasgi reload --frontends) replaces them one at "
                      "a time, new one first. More than the CPU cores needs --force."),
    click.Option(["--force"], is_flag=True, envvar="ZASGI_FORCE", show_envvar=True,
                 help="Allow --frontends above the number of CPU cores."),
]  # fmt: skip


@click.command(
    "run", params=[*options.worker_params(), *_OWN, *_FLEET, *options.frontend_params(fo.Run.FORWARD)]
)
def command(app: str, host: str, port: int, root_path: str, backend: str | None, **opts: Any) -> None:
    """Serve APP ('module:attribute') with N front ends and N workers on this machine."""
    process.setup_logging(opts["log_level"])
    count = opts.pop("frontends")
    try:
        listeners.check_count(count, force=opts.pop("force"))
    except listeners.FleetError as exc:  # one line, not click's usage text
        click.echo(f"zasgi run: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    runtime = Path(tempfile.gettempdir()) / f"zasgi-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    base, fixed = _backends(backend, runtime, count)
    list_path = str(runtime / f"run-{os.getpid()}.frontends")
    config = options.worker_config(app, (fixed,) if fixed else (f"file://{list_path}",), **opts)
    admin_ports = _admin_ports(opts, count, port)
    frontend_argv = ["--host", host, "--port", str(port), "--root-path", root_path,
                     "--log-level", opts["log_level"], "--shutdown-timeout", str(opts["graceful_timeout"]),
                     *(["--reuse-port"] if hasattr(socket, "SO_REUSEPORT") else []),
                     *options.frontend_args(opts, fo.Run.FORWARD)]  # fmt: skip
    reload = options.reload_config(opts)
    pool = options.pool_config(opts)
    front_ends = fleet.Fleet(
        argv=frontend_argv, address=(host, port), count=count, endpoint_base=base, fixed_endpoint=fixed,
        list_path=list_path, env=_frontend_env(), admin_ports=admin_ports, named=count > 1,
    )  # fmt: skip
    supervisor = Supervisor(config=config, pool=pool, fleet=front_ends, reload=reload)
    workers = opts["workers"]

    def banner(url: str, facts: dict[str, str]) -> str:
        fes = f"{count} front ends, " if count > 1 else ""
        plural = "s" if workers > 1 else ""
        lines = [f"zasgi running on {url} ({fes}{workers} worker{plural}); Ctrl-C to stop",
                 f"  app      {app} (from {config.app_dir})"]  # fmt: skip
        lines += [f"  {key:<8} {value}" for key, value in facts.items()]
        if reload is not None:
            lines.append(f"  reload   watching {reload.describe()}")
        return "\n".join(lines)

    sys.exit(process.supervise(supervisor, banner=banner))


def _backends(backend: str | None, runtime: Path, count: int) -> tuple[str, str | None]:
    """(the prefix of every front end's ipc:// backend, a fixed tcp:// one or None). Each front end,
    and each successor in a roll, binds its own: BASE-SLOT.GENERATION.sock."""
    if backend is None:
        return f"ipc://{runtime}/run-{os.getpid()}", None
    if backend.startswith("ipc://"):
        return backend.removesuffix(".sock"), None
    if count > 1:
        raise click.UsageError(f"--backend {backend}: several front ends each need a backend of their own; "
                               "leave --backend out (private ipc:// sockets) or give an ipc:// path prefix")
    return "", backend  # one front end on it; no rolls (a successor could not bind it beside the old)


def _admin_ports(opts: dict[str, Any], count: int, port: int) -> list[int | None]:
    """Each front end's admin port: with several, one each (the given port, or 9000, plus the slot
    number; a defaulted one found taken: any free port). None: forwarded as given."""
    if count == 1 or opts.get("admin") is False:
        return []
    given = opts.pop("admin_port", None)
    if given is not None:
        return [given + i if given else 0 for i in range(count)]
    if port == 0:
        return [0] * count
    host = opts.get("admin_host") or fo.default("admin_host")
    return [9000 + i if listeners.free_admin_port(host, 9000 + i) else 0 for i in range(count)]


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
