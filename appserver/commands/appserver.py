"""``zasgi appserver``: N app-server workers connected to every --connect front end."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

from wire import curve
from wire.curve import ClientKeys

from ..discovery import DEFAULT_RESOLVE_INTERVAL_S
from ..supervisor import Supervisor
from . import options, process


@click.command("appserver", params=options.worker_params())
@click.option("--connect", "connect", multiple=True, required=True, envvar="ZASGI_CONNECT",
              help="Front-end backend endpoint, e.g. tcp://10.0.0.5:7000, or tcp://NAME:7000 for every "
                   "address NAME resolves to (repeatable; env: space-separated).")
@click.option("--resolve-interval", "resolve_interval", default=DEFAULT_RESOLVE_INTERVAL_S, show_default=True,
              type=click.FloatRange(0, min_open=True), envvar="ZASGI_RESOLVE_INTERVAL",
              help="Seconds between DNS look-ups of --connect names (front ends join and leave).")
@click.option("--curve-secret-key", default=None, envvar="ZASGI_CURVE_SECRET_KEY",
              help="CurveZMQ: this worker's key_secret file (zasgi keygen).")
@click.option("--curve-server-key", default=None, envvar="ZASGI_CURVE_SERVER_KEY",
              help="CurveZMQ: the front end's public .key file.")  # fmt: skip
def command(app: str, connect: tuple[str, ...], **opts: Any) -> None:
    """Run N app-server workers for APP, connected to every --connect front end."""
    process.setup_logging(opts["log_level"])
    curve_keys = _curve_keys(opts.pop("curve_secret_key"), opts.pop("curve_server_key"))
    config = dataclasses.replace(options.worker_config(app, connect, **opts), curve=curve_keys)
    reload = options.reload_config(opts)
    supervisor = Supervisor(config=config, pool=options.pool_config(opts), reload=reload)

    def banner(url: str, facts: dict[str, str]) -> str:
        text = f"zasgi appserver ready: {opts['workers']} worker(s) connected to {' '.join(connect)}"
        return text + (f"\n  reload   watching {reload.describe()}" if reload is not None else "")

    sys.exit(process.supervise(supervisor, banner=banner))


def _curve_keys(secret_file: str | None, server_file: str | None) -> ClientKeys | None:
    """Both key files or neither; read here, once, so a bad one is a usage error, not a boot failure."""
    if (secret_file is None) != (server_file is None):
        raise click.UsageError("CurveZMQ needs both --curve-secret-key and --curve-server-key, or neither")
    if secret_file is None or server_file is None:
        return None
    try:
        return curve.load_client_keys(secret_file, server_file)
    except curve.KeyFileError as exc:
        raise click.UsageError(str(exc)) from None
