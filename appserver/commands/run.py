"""``zasgi run``: N front ends (one by default) and N workers on this machine (appserver/fleet.py).

The front end's options come from its table (wire/frontend_options.py): those ``run`` sets
itself (--host, --port, --root-path, --backend) with their defaults, the rest forwarded
as given; --log-level and --timeout-graceful-shutdown are the workers' too.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
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

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): systemd's first passed socket
EXIT_USAGE = 2

_OWN = [opt.click_option(**({"help": "ZeroMQ endpoint between the tiers [default: a private ipc:// socket]."}
                            if opt.name == "backend" else {}))
        for opt in fo.where(fo.Run.OWN)]  # fmt: skip


class FrontendCount(click.ParamType):
    """--frontends: a count, or "auto" (listeners.auto_count, resolved once the workers are known)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            return int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


_FLEET = [
    click.Option(["--frontends"], default="auto", show_default=True, type=FrontendCount(),
                 envvar="ZASGI_FRONTENDS", show_envvar=True,
                 help="Front-end processes on the one port (SO_REUSEPORT; Linux): HTTP on that many cores, "
                      "every worker joined to each, one admin port for all. auto: one per worker, at most "
                      "one per CPU core (1 with --uds, a tcp:// --backend, or off Linux). SIGUSR2 "
                      "(zasgi reload --frontends) replaces them one at a time, new one first. More than the "
                      "CPU cores needs --force."),
    click.Option(["--force"], is_flag=True, envvar="ZASGI_FORCE", show_envvar=True,
                 help="Allow --frontends above the number of CPU cores."),
]  # fmt: skip


@click.command(
    "run", params=[*options.worker_params(), *_OWN, *_FLEET, *options.frontend_params(fo.Run.FORWARD)]
)
def command(app: str, host: str, port: int, root_path: str, backend: str | None, **opts: Any) -> None:
    """Serve APP ('module:attribute') with N front ends and N workers on this machine."""
    process.setup_logging(opts["log_level"], opts["log_format"], opts["log_config"])
    options.load_env_file(opts.pop("env_file"))
    count = opts.pop("frontends")
    if count == "auto":
        fixed_backend = backend is not None and not backend.startswith("ipc://")
        count = listeners.auto_count(opts["workers"], single=opts["uds"] is not None or fixed_backend)
    try:
        listeners.check_count(count, force=opts.pop("force"))
        if count > 1 and opts["uds"] is not None:
            raise listeners.FleetError(f"--frontends {count}: a --uds socket has one front end")
    except listeners.FleetError as exc:  # one line, not click's usage text
        click.echo(f"zasgi run: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    runtime = _runtime_dir()
    base, fixed = _backends(backend, runtime, count)
    if fixed is not None:
        _check_backend(fixed, opts["insecure"])
    listen_fd = _listen_fd(opts)  # the fleet passes it on itself (one copy per front end)
    list_path = str(runtime / f"run-{os.getpid()}.frontends")
    config = options.worker_config(app, (fixed,) if fixed else (f"file://{list_path}",), **opts)
    admin_ports, shared_admin = _admin_ports(opts, count, port)
    own_socket = opts["uds"] is not None  # the front end binds its Unix socket itself (listen.py)
    frontend_argv = ["--host", host, "--port", str(port), "--root-path", root_path,
                     "--log-level", opts["log_level"], "--shutdown-timeout", str(opts["graceful_timeout"]),
                     "--log-format", opts["log_format"],
                     *(["--log-config", opts["log_config"]] if opts["log_config"] else []),
                     *(["--reuse-port"] if hasattr(socket, "SO_REUSEPORT") and not own_socket else []),
                     *options.frontend_args(opts, fo.Run.FORWARD)]  # fmt: skip
    reload = options.reload_config(opts)
    pool = options.pool_config(opts)
    front_ends = fleet.Fleet(
        argv=frontend_argv, address=(host, port), count=count, endpoint_base=base, fixed_endpoint=fixed,
        list_path=list_path, env=_frontend_env(), admin_ports=admin_ports, shared_admin=shared_admin,
        named=count > 1,
        listen_fd=listen_fd, own_socket=own_socket,
    )  # fmt: skip
    supervisor = Supervisor(config=config, pool=pool, fleet=front_ends, reload=reload)
    workers = opts["workers"]

    def banner(url: str, facts: dict[str, str]) -> str:
        if front_ends.admin_url is not None:  # the one to probe and scrape, not each front end's own
            facts = {**facts, "admin": front_ends.admin_url}
        fes = f"{count} front ends, " if count > 1 else ""
        plural = "s" if workers > 1 else ""
        lines = [f"zasgi running on {url} ({fes}{workers} worker{plural}); Ctrl-C to stop",
                 f"  app      {app} (from {config.app_dir})"]  # fmt: skip
        lines += [f"  {key:<8} {value}" for key, value in facts.items()]
        if reload is not None:
            lines.append(f"  reload   watching {reload.describe()}")
        return "\n".join(lines)

    sys.exit(process.supervise(supervisor, banner=banner))  # (fleet.stop removes our socket files)


def _runtime_dir() -> Path:
    """The per-user directory of run's files (backend sockets run-PID-SLOT.GEN.sock, hand-off
    sockets, the workers' run-PID.frontends list); files of runs whose process is gone (killed,
    crashed) are removed first."""
    runtime = Path(tempfile.gettempdir()) / f"zasgi-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    for stale in runtime.glob("run-*"):
        pid = re.match(r"run-(\d+)", stale.name)
        if pid and not _alive(int(pid[1])):
            stale.unlink(missing_ok=True)
    return runtime


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def _check_backend(backend: str, insecure: bool | None) -> None:
    """run's workers hold no CurveZMQ keys (they are its own children): a backend others can reach
    is unencrypted, so it must be asked for, with the remedy run has (not the split's keys)."""
    scheme, _, rest = backend.partition("://")
    host = rest.rpartition(":")[0].strip("[]")
    if scheme != "tcp" or insecure or host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise click.UsageError(
        f"--backend {backend} is not a loopback address, and zasgi run's workers use no CurveZMQ keys: "
        "leave --backend out (a private ipc:// socket), use tcp://127.0.0.1:PORT, or pass --insecure "
        "to expose it unencrypted (for encryption, run `zasgi frontend` and `zasgi appserver` with keys)"
    )


def _listen_fd(opts: dict[str, Any]) -> int | None:
    """The bound socket the front ends share instead of one the fleet binds: --fd N, or systemd's
    (socket activation names this process in LISTEN_PID; each front end, another process, gets
    it with --fd). Taken out of ``opts``: the fleet passes it on."""
    fd = opts.pop("fd")
    if fd is None and opts["uds"] is None and os.environ.get("LISTEN_PID") == str(os.getpid()):
        if os.environ.get("LISTEN_FDS", "0").strip() not in ("", "0"):
            fd = SD_LISTEN_FDS_START
    return fd


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


def _admin_ports(
    opts: dict[str, Any], count: int, port: int
) -> tuple[list[int | None], tuple[str, int, bool] | None]:
    """With several front ends: each one's own admin port (any free one; ``zasgi status --pid-file``
    finds them), and the one they all serve, answering for all (frontend/fleet_admin.py): the
    given --admin-port, else 9000 (any free port beside --port 0; a defaulted 9000 found taken
    leaves only their own). ([], None): one front end, the port forwarded as given."""
    if count == 1 or opts.get("admin") is False:
        return [], None
    given = opts.pop("admin_port", None)
    host = opts.get("admin_host") or fo.default("admin_host")
    shared = given if given is not None else 0 if port == 0 else 9000
    return [0] * count, (host, shared, given is not None)


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
