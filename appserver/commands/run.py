"""``zasgi run``: one front end and N workers on this machine.

The front end's options come from its table (wire/frontend_options.py): those ``run`` sets
itself (--host, --port, --root-path, --backend) with their defaults, the rest forwarded
as given; --log-level and --timeout-graceful-shutdown are the workers' too.
"""

from __future__ import annotations

import ipaddress
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

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): systemd's first passed socket

_OWN = [opt.click_option(**({"help": "ZeroMQ endpoint between the tiers [default: a private ipc:// socket]."}
                            if opt.name == "backend" else {}))
        for opt in fo.where(fo.Run.OWN)]  # fmt: skip


@click.command("run", params=[*options.worker_params(), *_OWN, *options.frontend_params(fo.Run.FORWARD)])
def command(app: str, host: str, port: int, root_path: str, backend: str | None, **opts: Any) -> None:
    """Serve APP ('module:attribute') with one front end and N workers on this machine."""
    process.setup_logging(opts["log_level"], opts["log_format"], opts["log_config"])
    options.load_env_file(opts.pop("env_file"))
    private = None
    if backend is None:
        private = _private_socket()
        backend = f"ipc://{private}"
    _check_backend(backend, opts["insecure"])
    fds = _listen_fds(opts)
    config = options.worker_config(app, (backend,), **opts)
    frontend_argv = ["--host", host, "--port", str(port), "--backend", backend, "--root-path", root_path,
                     "--log-level", opts["log_level"], "--shutdown-timeout", str(opts["graceful_timeout"]),
                     "--log-format", opts["log_format"],
                     *(["--log-config", opts["log_config"]] if opts["log_config"] else []),
                     *options.frontend_args(opts, fo.Run.FORWARD)]  # fmt: skip
    reload = options.reload_config(opts)
    pool = options.pool_config(opts)
    supervisor = Supervisor(
        config=config,
        pool=pool,
        frontend_argv=frontend_argv,
        frontend_env=_frontend_env(),
        reload=reload,
        frontend_fds=fds,
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

    try:
        code = process.supervise(supervisor, banner=banner)
    finally:
        if private is not None:
            private.unlink(missing_ok=True)
    sys.exit(code)


def _private_socket() -> Path:
    """This run's backend socket file, in a per-user directory; files of runs whose process is
    gone (killed, crashed) are removed first."""
    runtime = Path(tempfile.gettempdir()) / f"zasgi-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    for stale in runtime.glob("run-*.sock"):
        pid = stale.name.removeprefix("run-").removesuffix(".sock")
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    return runtime / f"run-{os.getpid()}.sock"


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


def _listen_fds(opts: dict[str, Any]) -> tuple[int, ...]:
    """The listening socket the front end inherits: --fd N, or systemd's (socket activation names
    this process in LISTEN_PID; the front end, another process, is told with --fd 3)."""
    if opts["fd"] is None and opts["uds"] is None and os.environ.get("LISTEN_PID") == str(os.getpid()):
        if os.environ.get("LISTEN_FDS", "0").strip() not in ("", "0"):
            opts["fd"] = SD_LISTEN_FDS_START
    return () if opts["fd"] is None else (opts["fd"],)


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
