"""The ``zasgi`` command: ``run`` (everything on one machine), ``frontend``, ``appserver``, ``reload``,
``status`` (the workers each front end sees, from its admin endpoint).

Side effects (logging setup, processes) live here and in the supervisor only.
Every option also reads a ``ZASGI_*`` environment variable so containers need
no wrapper script. ``zasgi frontend`` hands its arguments to
``python -m frontend``: appserver never imports frontend. ``zasgi reload``
sends SIGHUP (a rolling restart) to the supervisor named by ``--pid-file``.

Option names follow uvicorn's where the meaning is the same, so switching is
a rename of the command. ``zasgi run`` forwards every front-end option
(``FRONTEND_OPTIONS``, one table; a test keeps it in step with frontend/cli.py).
``--config FILE`` (TOML, see configfile.py) fills click's ``default_map``;
``zasgi frontend --config`` turns the file into ``ZASGI_*`` variables the
exec'd front end reads, without overriding variables already set, so the
precedence is the same everywhere: command line > environment > file > defaults.
``--reload`` rolls the workers when the app's files change (reload.py).

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 boot error (front end or
worker could not start, handshake refused), 4 the app could not be loaded or
its lifespan startup failed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from wire import compiled, curve
from wire.curve import ClientKeys

from . import configfile
from .config import PoolConfig, WorkerConfig
from .control import PidFile, PidFileError, send_reload
from .reload import DEFAULT_INCLUDE, ReloadConfig
from .supervisor import EXIT_APP_LOAD, EXIT_BOOT, Supervisor, SupervisorError

LOG_LEVELS = click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False)
LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def _check_app(ctx: click.Context, param: click.Parameter, value: str) -> str:
    module, _, attr = value.partition(":")
    if not module or not attr:
        raise click.BadParameter(f"{value!r} must look like 'module:attribute' (e.g. 'main:app')")
    return value


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager ``--config``: the file's values become this command's ``default_map``."""
    if value:
        ctx.default_map = configfile.values_for(value, ctx.info_name or "", _schemas())
    return value


CONFIG_OPTION = click.option(
    "-c", "--config", default=None, envvar="ZASGI_CONFIG", is_eager=True, expose_value=False,
    callback=_load_config_file, type=click.Path(dir_okay=False),
    help="TOML file of option values (keys: option names; [run]/[frontend]/[appserver] sections). "
         "Command line and ZASGI_* variables win over it.",
)  # fmt: skip


def _worker_options(func: Any) -> Any:
    """Options shared by ``run`` and ``appserver`` (one spelling, one env var each)."""
    options = [
        CONFIG_OPTION,
        click.argument("app", envvar="ZASGI_APP", callback=_check_app),
        click.option("-w", "--workers", default=1, show_default=True, type=click.IntRange(1, 512),
                     envvar="ZASGI_WORKERS", help="Worker processes."),
        click.option("--app-dir", default=".", show_default=True, envvar="ZASGI_APP_DIR",
                     help="Directory put first on sys.path to import APP from."),
        click.option("--factory", is_flag=True, envvar="ZASGI_FACTORY",
                     help="APP names a callable that returns the ASGI app."),
        click.option("--lifespan", type=click.Choice(["auto", "on", "off"]), default="auto",
                     show_default=True, envvar="ZASGI_LIFESPAN"),
        click.option("--interface", type=click.Choice(["auto", "asgi3", "asgi2", "wsgi"]), default="auto",
                     show_default=True, envvar="ZASGI_INTERFACE",
                     help="How to call APP; wsgi runs it in a thread pool (a2wsgi)."),
        click.option("--capacity", default=4096, show_default=True, type=click.IntRange(1),
                     envvar="ZASGI_CAPACITY",
                     help="Concurrent HTTP requests per worker, at most: the adaptive limit's ceiling "
                          "(with --no-adaptive, the fixed number)."),
        click.option("--adaptive/--no-adaptive", default=True, show_default=True, envvar="ZASGI_ADAPTIVE",
                     help="Each worker's limit follows its app: its event-loop lag and request latency "
                          "(README: Overload)."),
        click.option("--capacity-floor", default=8, show_default=True, type=click.IntRange(1),
                     envvar="ZASGI_CAPACITY_FLOOR", help="The adaptive limit never goes below this."),
        click.option("--adaptive-target", default=0.01, show_default=True,
                     type=click.FloatRange(0, min_open=True), envvar="ZASGI_ADAPTIVE_TARGET",
                     help="Seconds of queueing a worker may hold before its limit shrinks."),
        click.option("--timeout-graceful-shutdown", "graceful_timeout", default=30.0, show_default=True,
                     type=click.FloatRange(0), envvar="ZASGI_TIMEOUT_GRACEFUL_SHUTDOWN",
                     help="Seconds a draining worker lets in-flight requests finish."),
        click.option("--timeout-stream-drain", "stream_drain_timeout", default=3600.0, show_default=True,
                     type=click.FloatRange(0), envvar="ZASGI_TIMEOUT_STREAM_DRAIN",
                     help="Seconds a replaced worker (reload, --max-requests) keeps serving its WebSockets "
                          "and started streaming responses, counted from its drain; then they close "
                          "(1012). 0: closed when --timeout-graceful-shutdown ends."),
        click.option("--max-lingering", default=None, type=click.IntRange(0), envvar="ZASGI_MAX_LINGERING",
                     help="Replaced workers lingering for their sessions at once; past it the oldest close "
                          "theirs (1012) [default: 4 x --workers]."),
        click.option("--resolve-interval", "resolve_interval", default=5.0, show_default=True,
                     type=click.FloatRange(0, min_open=True), envvar="ZASGI_RESOLVE_INTERVAL",
                     help="Seconds between DNS look-ups of --connect names (front ends join and leave)."),
        click.option("--log-level", default="info", show_default=True, type=LOG_LEVELS, envvar="ZASGI_LOG_LEVEL"),
        click.option("--sched-batch/--no-sched-batch", default=True, show_default=True, envvar="ZASGI_SCHED_BATCH",
                     help="Run under Linux's SCHED_BATCH policy: fewer context switches per request "
                          "(`run`: the front end too)."),
        click.option("--max-requests", "--limit-max-requests", default=0, show_default=True,
                     type=click.IntRange(0),
                     envvar="ZASGI_MAX_REQUESTS",
                     help="Replace a worker (new one first) after this many HTTP requests; 0 = never."),
        click.option("--max-requests-jitter", default=0, show_default=True, type=click.IntRange(0),
                     envvar="ZASGI_MAX_REQUESTS_JITTER",
                     help="Add random(0..J) to each worker's --max-requests."),
        click.option("--max-surge", default=1, show_default=True, type=click.IntRange(1),
                     envvar="ZASGI_MAX_SURGE",
                     help="Workers replaced at once by a reload (SIGHUP) or --max-requests."),
        click.option("--timeout-worker-start", "worker_start_timeout", default=60.0, show_default=True,
                     type=click.FloatRange(0, min_open=True), envvar="ZASGI_TIMEOUT_WORKER_START",
                     help="Seconds a replacement worker gets to become ready before a reload gives up."),
        click.option("--pid-file", default=None, envvar="ZASGI_PID_FILE", type=click.Path(dir_okay=False),
                     help="Write the supervisor's pid here (for `zasgi reload`); removed at exit."),
        click.option("--reload", is_flag=True, envvar="ZASGI_RELOAD",
                     help="Development: rolling restart when the app's files change (no request lost)."),
        click.option("--reload-dir", "reload_dirs", multiple=True, envvar="ZASGI_RELOAD_DIR",
                     type=click.Path(file_okay=False),
                     help="Directory to watch with --reload (repeatable) [default: --app-dir]."),
        click.option("--reload-include", "reload_includes", multiple=True, envvar="ZASGI_RELOAD_INCLUDE",
                     help=f"Glob of files that trigger --reload (repeatable) "
                          f"[default: {' '.join(DEFAULT_INCLUDE)}]."),
        click.option("--reload-exclude", "reload_excludes", multiple=True, envvar="ZASGI_RELOAD_EXCLUDE",
                     help="Glob of files --reload ignores (repeatable) [default: .* *.py[cod] *~]."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _worker_config(app: str, connect: tuple[str, ...], **opts: Any) -> WorkerConfig:
    try:
        return WorkerConfig(
            app=app,
            app_dir=str(Path(opts["app_dir"]).resolve()),
            connect=connect,
            capacity=opts["capacity"],
            adaptive=opts["adaptive"],
            capacity_floor=opts["capacity_floor"],
            adaptive_target_s=opts["adaptive_target"],
            graceful_timeout_s=opts["graceful_timeout"],
            stream_drain_timeout_s=opts["stream_drain_timeout"],
            resolve_interval_s=opts["resolve_interval"],
            factory=opts["factory"],
            lifespan=opts["lifespan"],
            interface=opts["interface"],
            log_level=opts["log_level"],
            sched_batch=opts["sched_batch"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _reload_config(opts: dict[str, Any]) -> ReloadConfig | None:
    dirs, include, exclude = opts["reload_dirs"], opts["reload_includes"], opts["reload_excludes"]
    if not opts["reload"]:
        if dirs or include or exclude:
            raise click.UsageError("--reload-dir/--reload-include/--reload-exclude need --reload")
        return None
    try:
        return ReloadConfig.build(dirs or (opts["app_dir"],), include, exclude)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _pool_config(opts: dict[str, Any]) -> PoolConfig:
    try:
        return PoolConfig(
            workers=opts["workers"],
            max_requests=opts["max_requests"],
            max_requests_jitter=opts["max_requests_jitter"],
            max_surge=opts["max_surge"],
            worker_start_timeout_s=opts["worker_start_timeout"],
            max_lingering=4 * opts["workers"] if opts["max_lingering"] is None else opts["max_lingering"],
            pid_file=opts["pid_file"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _fe(*names: str, help: str | None = None, **kwargs: Any) -> click.Option:
    """A front-end option as ``zasgi run`` sees it: no default (the front end owns it), same env var."""
    env = "ZASGI_" + names[0].split("/")[0].lstrip("-").replace("-", "_").upper()
    return click.Option(list(names), default=None, envvar=env, help=help, **kwargs)


# Every option of `python -m frontend` that `zasgi run` forwards as given (None: not given, the
# front end's default applies). The front end validates; these types only make errors early.
# `zasgi run` sets --host/--port/--backend/--root-path/--log-level/--shutdown-timeout/--sched-batch itself.
FRONTEND_OPTIONS: list[click.Option] = [
    _fe("--insecure", is_flag=True, help="Allow a non-loopback tcp:// backend without CurveZMQ."),
    _fe("--log-format", type=click.Choice(["text", "json"]), help="Front-end log format [text]."),
    _fe("--access-log/--no-access-log", help="One line per request [on] (stderr under run, like the rest of the front end's output)."),
    _fe("--admin/--no-admin", help="Serve /healthz /readyz /metrics /workers [on]."),
    _fe("--admin-host", help="Admin endpoint address [127.0.0.1]."),
    _fe("--admin-port", type=click.IntRange(0, 65535), help="Admin endpoint port; 0: any free port."),
    _fe("--queue-size", type=click.IntRange(0), help="Requests that may wait for a worker [no bound]."),
    _fe("--queue-timeout", type=click.FloatRange(0), help="Seconds a request may wait for a worker [10]."),
    _fe("--queue-target", type=click.FloatRange(0),
        help="Queueing delay target: newest first past it, 503 past it for --queue-interval [0.25]."),
    _fe("--queue-interval", type=click.FloatRange(0, min_open=True),
        help="Seconds above --queue-target before the queue sheds [2]."),
    _fe("--heartbeat-ms", type=click.IntRange(1)),
    _fe("--liveness", type=click.IntRange(1), help="Silent heartbeats before a worker is gone [3]."),
    _fe("--window-bytes", type=click.IntRange(1), help="Response window per stream [2 MiB]."),
    _fe("--max-payload-bytes", type=click.IntRange(1)),
    _fe("--limit-max-line-size", type=click.IntRange(1), help="Request line bytes [16 KiB]."),
    _fe("--limit-max-header-size", type=click.IntRange(1), help="Bytes per header field [16 KiB]."),
    _fe("--limit-max-headers", type=click.IntRange(1), help="Header fields per request [100]."),
    _fe("--limit-max-body-size", type=click.IntRange(0), help="Request body bytes [unlimited]."),
    _fe("--timeout-keep-alive", type=click.FloatRange(0), help="Idle keep-alive seconds [5]."),
    _fe("--timeout-request-header", type=click.FloatRange(0), help="Seconds for a request head [10]."),
    _fe("--limit-concurrency", type=click.IntRange(1), help="Client connections at once; more get 503."),
    _fe("--ssl-certfile", help="TLS certificate (chain) PEM; enables https/wss."),
    _fe("--ssl-keyfile", help="TLS private key PEM [in --ssl-certfile]."),
    _fe("--ssl-keyfile-password"),
    _fe("--ssl-ca-certs", help="CA file client certificates must chain to."),
    _fe("--ssl-cert-reqs", type=click.IntRange(0, 2), help="Client certs: 0 no, 1 optional, 2 required."),
    _fe("--ssl-ciphers"),
    _fe("--proxy-headers/--no-proxy-headers", help="Trust X-Forwarded-* from --forwarded-allow-ips."),
    _fe("--forwarded-allow-ips", help="Proxy addresses whose proxy headers are trusted [127.0.0.1]."),
    _fe("--ws-max-size", type=click.IntRange(1), help="Largest WebSocket message in bytes [16 MiB]."),
    _fe("--ws-ping-interval", type=click.FloatRange(0), help="WebSocket ping seconds; 0: off [20]."),
    _fe("--ws-ping-timeout", type=click.FloatRange(0), help="Seconds without a pong [20]."),
    _fe("--ws-per-message-deflate/--no-ws-per-message-deflate", help="permessage-deflate [on]."),
]

# The other front-end options, for `zasgi frontend --config` keys (see _frontend_env): `zasgi run`
# sets these itself, and CurveZMQ is for the split (run's workers are on a private ipc socket).
_FRONTEND_OWN: list[click.Option] = [
    _fe("--host"), _fe("--port"), _fe("--backend"), _fe("--root-path"), _fe("--log-level"),
    _fe("--shutdown-timeout", "--timeout-graceful-shutdown"), _fe("--sched-batch/--no-sched-batch"),
    _fe("--curve-secret-key"), _fe("--authorized-keys"),
]  # fmt: skip


def _frontend_options(func: Any) -> Any:
    func.__click_params__ = [*getattr(func, "__click_params__", []), *reversed(FRONTEND_OPTIONS)]
    return func


def _frontend_args(opts: dict[str, Any]) -> list[str]:
    """Pop the front-end options from ``opts`` and spell the given ones as ``python -m frontend`` argv."""
    args: list[str] = []
    for param in FRONTEND_OPTIONS:
        value = opts.pop(param.name or "", None)
        if value is None:
            continue
        if param.is_flag:
            if param.secondary_opts:
                args.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                args.append(param.opts[0])
        elif param.multiple:
            for item in value:
                args += [param.opts[0], str(item)]
        else:
            args += [param.opts[0], str(value)]
    return args


def _schemas() -> dict[str, configfile.Schema]:
    """The config-file keys of each command (run's include the front end's, forwarded)."""
    return {
        "run": configfile.Schema(run.params),
        "appserver": configfile.Schema(appserver.params),
        "frontend": configfile.Schema([*FRONTEND_OPTIONS, *_FRONTEND_OWN]),
    }


def _frontend_env(args: list[str]) -> list[str]:
    """``zasgi frontend``: take ``--config/-c FILE`` (or ZASGI_CONFIG) out of ``args`` into the environment.

    Each file value becomes the front end's own ``ZASGI_*`` variable unless that is set
    already, so command line > environment > file holds there too.
    """
    path, rest, i = os.environ.get("ZASGI_CONFIG"), [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "--config"):
            if i + 1 >= len(args):
                raise configfile.ConfigError(f"{arg} needs a file name")
            path, i = args[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            path = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    if not path:
        return rest
    schema = _schemas()["frontend"]
    for name, value in configfile.values_for(path, "frontend", _schemas()).items():
        param = schema.param(name)
        env = param.envvar if isinstance(param.envvar, str) else None
        if env is None or env in os.environ:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = " ".join(str(v) for v in value)
        else:
            text = str(value)
        os.environ[env] = text
    return rest


def _ready_facts(line: str) -> tuple[str, dict[str, str]]:
    """``zasgi-ready frontend URL key=value...`` -> (URL, {key: value})."""
    words = line.split()
    if len(words) < 3 or words[:2] != ["zasgi-ready", "frontend"]:
        return line, {}
    facts = dict(w.split("=", 1) for w in words[3:] if "=" in w)
    return words[2], facts


Banner = Any  # (url, ready-line facts) -> text


def _run_frontend_env() -> dict[str, str]:
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


def _supervise(supervisor: Supervisor, *, banner: Banner) -> int:
    """Start (front end, then) workers, print the ready line, run until stopped."""
    supervisor.install_signals()  # before the pid file: a reload must never meet the default SIGHUP
    pid_file = PidFile(supervisor.pool.pid_file) if supervisor.pool.pid_file else None
    try:
        if pid_file is not None:
            pid_file.acquire()
    except PidFileError as exc:
        click.echo(f"zasgi: {exc}", err=True)
        return EXIT_BOOT
    try:
        return _start_and_run(supervisor, banner=banner)
    finally:
        if pid_file is not None:
            pid_file.release()


def _start_and_run(supervisor: Supervisor, *, banner: Banner) -> int:
    try:
        url, facts = "", {}
        if supervisor.frontend_argv is not None:
            url, facts = _ready_facts(supervisor.start_frontend())
        supervisor.start_workers()
        supervisor.wait_ready()
    except SupervisorError as exc:
        if exc.exit_code != EXIT_APP_LOAD:  # the worker already said why, in one line
            click.echo(f"zasgi: {exc}", err=True)
        supervisor.stop()
        return exc.exit_code
    click.echo(banner(url, facts))
    sys.stdout.flush()
    return supervisor.run()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zasgi", message=f"%(prog)s %(version)s ({compiled.describe()})")
def main() -> None:
    """zasgi: an ASGI server split into an HTTP front end and app-server workers over ZeroMQ."""


@main.command()
@_worker_options
@click.option("--host", default="127.0.0.1", show_default=True, envvar="ZASGI_HOST")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), envvar="ZASGI_PORT")
@click.option("--root-path", default="", envvar="ZASGI_ROOT_PATH", help="ASGI root_path (mounted under a prefix).")
@click.option("--backend", default=None, envvar="ZASGI_BACKEND",
              help="ZeroMQ endpoint between the tiers [default: a private ipc:// socket].")  # fmt: skip
@_frontend_options
def run(app: str, host: str, port: int, root_path: str, backend: str | None, **opts: Any) -> None:
    """Serve APP ('module:attribute') with one front end and N workers on this machine."""
    _setup_logging(opts["log_level"])
    if backend is None:
        runtime = Path(tempfile.gettempdir()) / f"zasgi-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        backend = f"ipc://{runtime}/run-{os.getpid()}.sock"
    config = _worker_config(app, (backend,), **opts)
    frontend_argv = ["--host", host, "--port", str(port), "--backend", backend, "--root-path", root_path,
                     "--log-level", opts["log_level"], "--shutdown-timeout", str(opts["graceful_timeout"]),
                     "--sched-batch" if opts["sched_batch"] else "--no-sched-batch",
                     *_frontend_args(opts)]  # fmt: skip
    reload = _reload_config(opts)
    pool = _pool_config(opts)
    supervisor = Supervisor(
        config=config, pool=pool, frontend_argv=frontend_argv, frontend_env=_run_frontend_env(), reload=reload
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

    sys.exit(_supervise(supervisor, banner=banner))


@main.command()
@_worker_options
@click.option("--connect", "connect", multiple=True, required=True, envvar="ZASGI_CONNECT",
              help="Front-end backend endpoint, e.g. tcp://10.0.0.5:7000, or tcp://NAME:7000 for every "
                   "address NAME resolves to (repeatable; env: space-separated).")  # fmt: skip
@click.option("--curve-secret-key", default=None, envvar="ZASGI_CURVE_SECRET_KEY",
              help="CurveZMQ: this worker's key_secret file (zasgi keygen).")
@click.option("--curve-server-key", default=None, envvar="ZASGI_CURVE_SERVER_KEY",
              help="CurveZMQ: the front end's public .key file.")  # fmt: skip
def appserver(app: str, connect: tuple[str, ...], **opts: Any) -> None:
    """Run N app-server workers for APP, connected to every --connect front end."""
    _setup_logging(opts["log_level"])
    curve_keys = _curve_keys(opts.pop("curve_secret_key"), opts.pop("curve_server_key"))
    config = dataclasses.replace(_worker_config(app, connect, **opts), curve=curve_keys)
    reload = _reload_config(opts)
    supervisor = Supervisor(config=config, pool=_pool_config(opts), reload=reload)

    def banner(url: str, facts: dict[str, str]) -> str:
        text = f"zasgi appserver ready: {opts['workers']} worker(s) connected to {' '.join(connect)}"
        return text + (f"\n  reload   watching {reload.describe()}" if reload is not None else "")

    sys.exit(_supervise(supervisor, banner=banner))


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


@main.command()
@click.argument("path")
def keygen(path: str) -> None:
    """Write a CurveZMQ key pair: PATH.key (public) and PATH.key_secret (mode 0600); print the public key.

    Give PATH.key_secret to the process it belongs to (--curve-secret-key) and PATH.key to its peer:
    a worker's into the front end's --authorized-keys directory, the front end's as --curve-server-key.
    """
    try:
        public_file, secret_file, public = curve.keygen(path)
    except curve.KeyFileError as exc:
        click.echo(f"zasgi keygen: {exc}", err=True)
        sys.exit(1)
    click.echo(public.decode())
    click.echo(f"wrote {public_file} and {secret_file}", err=True)


@main.command()
@click.option("--pid-file", default=None, envvar="ZASGI_PID_FILE", type=click.Path(dir_okay=False),
              help="The pid file given to `zasgi run` / `zasgi appserver`.")
def reload(pid_file: str | None) -> None:
    """Rolling restart: replace every worker, new ones first (SIGHUP to the supervisor)."""
    if not pid_file:
        click.echo("zasgi reload: no pid file: pass --pid-file PATH or set ZASGI_PID_FILE "
                   "(the same one `zasgi run/appserver --pid-file` writes)", err=True)  # fmt: skip
        sys.exit(1)
    try:
        pid = send_reload(pid_file)
    except PidFileError as exc:
        click.echo(f"zasgi reload: {exc}", err=True)
        sys.exit(1)
    click.echo(f"zasgi: reload requested (SIGHUP sent to pid {pid})")


# ---------------------------------------------------------------- zasgi status
# Reads each front end's admin endpoint (GET /workers, JSON; frontend/admin.py) over plain HTTP.

_STATUS_COLUMNS = (("WORKER", "id"), ("HOST", "host"), ("PID", "pid"), ("STATE", "state"),
                   ("IN-FLIGHT", "in_flight"), ("LIMIT", "limit"), ("CAPACITY", "capacity"),
                   ("WEBSOCKETS", "ws_in_flight"), ("UPTIME", "uptime_s"), ("SERVED", "served"))  # fmt: skip


def _fetch_status(url: str, timeout_s: float) -> dict[str, Any]:
    """``URL/workers`` as a dict. Raises ValueError with a one-line reason."""
    import json
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        with opener.open(url.rstrip("/") + "/workers", timeout=timeout_s) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ValueError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ValueError(str(getattr(exc.reason, "strerror", None) or exc.reason)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list):
        raise ValueError("not a zasgi admin endpoint (no worker list)")
    return data


def _uptime(seconds: Any) -> str:
    s = int(seconds) if isinstance(seconds, int | float) else 0
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return f"{d}d{h:02d}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


def _status_table(workers: list[Any]) -> list[str]:
    cell = lambda w, key: _uptime(w.get(key)) if key == "uptime_s" else str(w.get(key, ""))  # noqa: E731
    rows = [[cell(w, key) for _, key in _STATUS_COLUMNS] for w in workers if isinstance(w, dict)]
    header = [title for title, _ in _STATUS_COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]  # fmt: skip


def _lingering(workers: list[Any]) -> str:
    """'2 lingering (15 sessions left), ' for the summary line; '' with none."""
    rows = [w for w in workers if isinstance(w, dict) and w.get("state") == "lingering"]
    if not rows:
        return ""
    left = sum(int(w.get(key) or 0) for w in rows for key in ("in_flight", "ws_in_flight"))
    return f"{len(rows)} lingering ({left} session{'' if left == 1 else 's'} left), "


@main.command()
@click.option("--admin", "admins", multiple=True, default=("http://127.0.0.1:9000",), show_default=True,
              envvar="ZASGI_ADMIN_URL", metavar="URL",
              help="A front end's admin endpoint (repeatable; env: space-separated).")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds to wait for each front end.")
@click.option("--json", "as_json", is_flag=True, help="Print the front ends' answers as JSON.")  # fmt: skip
def status(admins: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """The workers of each front end: id, host, pid, state, in-flight, limit, capacity, uptime, served."""
    import json

    answers, failed = [], False
    for admin in admins:
        url = admin if "://" in admin else f"http://{admin}"
        try:
            answers.append((url, _fetch_status(url, timeout)))
        except ValueError as exc:
            click.echo(f"zasgi status: cannot read {url}: {exc}", err=True)
            failed = True
    if as_json:
        click.echo(json.dumps([{"admin": url, **data} for url, data in answers], indent=2))
    for url, data in answers if not as_json else ():
        fe = data.get("frontend") if isinstance(data.get("frontend"), dict) else {}
        workers = data["workers"]
        ready = sum(1 for w in workers if isinstance(w, dict) and w.get("state") == "ready")
        queue = fe.get("queue", {}).get("http", 0) if isinstance(fe.get("queue"), dict) else 0
        plural = "" if len(workers) == 1 else "s"
        mode = f" ({fe['queue_mode']})" if fe.get("queue_mode", "normal") != "normal" else ""
        shed = fe.get("shed") if isinstance(fe.get("shed"), dict) else {}
        refused = sum(v for v in shed.values() if isinstance(v, int))
        lingering = _lingering(workers)
        click.echo(f"front end {fe.get('id', '?')} {fe.get('url', '')} (admin {url}): "
                   f"{len(workers)} worker{plural}, {ready} ready, {lingering}{queue} queued{mode}, "
                   f"{refused} refused")  # fmt: skip
        for line in _status_table(workers) if workers else ["(no workers)"]:
            click.echo("  " + line)
    sys.exit(1 if failed else 0)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def frontend(args: tuple[str, ...]) -> None:
    """Run a front end (HTTP listener + backend endpoint); see `zasgi frontend --help`."""
    try:
        argv = _frontend_env(list(args))
    except configfile.ConfigError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    os.execv(sys.executable, [sys.executable, "-m", "frontend", *argv])


if __name__ == "__main__":
    main()
