"""Options shared by several commands, each declared once: the workers' (``run``, ``appserver``),
``--config``, and the front end's, built from wire/frontend_options.py for ``run`` and ``frontend``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from wire import frontend_options as fo

from .. import configfile
from ..config import PoolConfig, WorkerConfig
from ..reload import DEFAULT_INCLUDE, ReloadConfig


def _check_app(ctx: click.Context, param: click.Parameter, value: str) -> str:
    module, _, attr = value.partition(":")
    if not module or not attr:
        raise click.BadParameter(f"{value!r} must look like 'module:attribute' (e.g. 'main:app')")
    return value


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager ``--config``: the file's values become this command's ``default_map``."""
    if value:
        ctx.default_map = configfile.values_for(value, ctx.info_name or "", schemas())
    return value


def config_option() -> click.Option:
    return click.Option(
        ["-c", "--config"], default=None, envvar="ZASGI_CONFIG", is_eager=True, expose_value=False,
        callback=_load_config_file, type=click.Path(dir_okay=False), show_envvar=True,
        help="TOML file of option values (keys: option names; [run]/[frontend]/[appserver] sections). "
             "Command line and ZASGI_* variables win over it.",
    )  # fmt: skip


def sched_batch_option() -> click.Option:
    return click.Option(
        ["--sched-batch/--no-sched-batch"], default=True, show_default=True, envvar="ZASGI_SCHED_BATCH",
        help="Run under Linux's SCHED_BATCH policy: fewer context switches per request "
             "(`run`: the front end too; appserver/sched.py).",
    )  # fmt: skip


def log_level_option() -> click.Option:
    return fo.BY_NAME["log_level"].click_option()  # the workers' and the front end's: one declaration


def worker_params() -> list[click.Parameter]:
    """Options shared by ``run`` and ``appserver`` (one spelling, one env var each)."""
    shutdown = fo.BY_NAME["shutdown_timeout"]  # the workers' drain and the front end's: one default
    return [
        config_option(),
        click.Argument(["app"], envvar="ZASGI_APP", callback=_check_app),
        click.Option(["--env-file"], default=None, envvar="ZASGI_ENV_FILE", show_envvar=True,
                     type=click.Path(exists=True, dir_okay=False),
                     help="Load environment variables for the app from this .env file (python-dotenv); "
                          "variables already set win."),
        click.Option(["-w", "--workers"], default=1, show_default=True, type=click.IntRange(1, 512),
                     envvar="ZASGI_WORKERS", help="Worker processes."),
        click.Option(["--app-dir"], default=".", show_default=True, envvar="ZASGI_APP_DIR",
                     help="Directory put first on sys.path to import APP from."),
        click.Option(["--factory"], is_flag=True, envvar="ZASGI_FACTORY",
                     help="APP names a callable that returns the ASGI app."),
        click.Option(["--lifespan"], type=click.Choice(["auto", "on", "off"]), default="auto",
                     show_default=True, envvar="ZASGI_LIFESPAN"),
        click.Option(["--interface"], type=click.Choice(["auto", "asgi3", "asgi2", "wsgi"]), default="auto",
                     show_default=True, envvar="ZASGI_INTERFACE",
                     help="How to call APP; wsgi runs it in a thread pool (a2wsgi)."),
        click.Option(["--wsgi-threads"], default=WorkerConfig.wsgi_threads, show_default=True,
                     type=click.IntRange(1, 1024), envvar="ZASGI_WSGI_THREADS", show_envvar=True,
                     help="Threads per worker running a WSGI app: the requests it runs at once."),
        click.Option(["--capacity"], default=4096, show_default=True, type=click.IntRange(1),
                     envvar="ZASGI_CAPACITY",
                     help="Concurrent HTTP requests per worker, at most: the adaptive limit's ceiling "
                          "(with --no-adaptive, the fixed number)."),
        click.Option(["--adaptive/--no-adaptive"], default=True, show_default=True, envvar="ZASGI_ADAPTIVE",
                     help="Each worker's limit follows its app: its event-loop lag and request latency "
                          "(README: Overload)."),
        click.Option(["--capacity-floor"], default=16, show_default=True, type=click.IntRange(1),
                     envvar="ZASGI_CAPACITY_FLOOR", help="The adaptive limit never goes below this."),
        click.Option(["--adaptive-target"], default=0.01, show_default=True,
                     type=click.FloatRange(0, min_open=True), envvar="ZASGI_ADAPTIVE_TARGET",
                     help="Seconds of queueing a worker may hold before its limit shrinks."),
        click.Option(["--timeout-graceful-shutdown", "graceful_timeout"], default=shutdown.default,
                     show_default=True, type=click.FloatRange(0), envvar="ZASGI_TIMEOUT_GRACEFUL_SHUTDOWN",
                     help="Seconds a draining worker lets in-flight requests finish."),
        click.Option(["--timeout-stream-drain", "stream_drain_timeout"], default=3600.0, show_default=True,
                     type=click.FloatRange(0), envvar="ZASGI_TIMEOUT_STREAM_DRAIN",
                     help="Seconds a replaced worker (reload, --max-requests) keeps serving its WebSockets "
                          "and started streaming responses, counted from its drain; then they close "
                          "(1012). 0: closed when --timeout-graceful-shutdown ends."),
        click.Option(["--max-lingering"], default=None, type=click.IntRange(0), envvar="ZASGI_MAX_LINGERING",
                     help="Replaced workers lingering for their sessions at once; past it the oldest close "
                          "theirs (1012) [default: 4 x --workers]."),
        click.Option(["--warn-blocked-loop"], default=0.5, show_default=True, type=click.FloatRange(0),
                     envvar="ZASGI_WARN_BLOCKED_LOOP",
                     help="Seconds a worker's event loop may be blocked (a synchronous call in async code) "
                          "before one warning names the request and the blocking line; 0: never."),
        click.Option(["--shm-bodies/--no-shm-bodies"], default=True, show_default=True,
                     envvar="ZASGI_SHM_BODIES", show_envvar=True,
                     help="Large bodies between a worker and a front end on the same host go through "
                          "shared memory (/dev/shm) rather than the socket; with any other front end "
                          "they go in messages."),
        log_level_option(),
        fo.BY_NAME["log_format"].click_option(),
        fo.BY_NAME["log_config"].click_option(),
        sched_batch_option(),
        click.Option(["--max-requests", "--limit-max-requests"], default=0, show_default=True,
                     type=click.IntRange(0), envvar="ZASGI_MAX_REQUESTS",
                     help="Replace a worker (new one first) after this many HTTP requests; 0 = never."),
        click.Option(["--max-requests-jitter"], default=0, show_default=True, type=click.IntRange(0),
                     envvar="ZASGI_MAX_REQUESTS_JITTER",
                     help="Add random(0..J) to each worker's --max-requests."),
        click.Option(["--max-worker-rss"], default=0, show_default=True, type=click.IntRange(0),
                     envvar="ZASGI_MAX_WORKER_RSS", show_envvar=True, metavar="MIB",
                     help="Replace a worker (new one first, no request lost) whose resident memory passes "
                          "this many MiB, checked every 5 s; 0 = never."),
        click.Option(["--max-surge"], default=1, show_default=True, type=click.IntRange(1),
                     envvar="ZASGI_MAX_SURGE",
                     help="Workers replaced at once by a reload (SIGHUP) or --max-requests."),
        click.Option(["--timeout-worker-start", "worker_start_timeout"], default=60.0, show_default=True,
                     type=click.FloatRange(0, min_open=True), envvar="ZASGI_TIMEOUT_WORKER_START",
                     help="Seconds a replacement worker gets to become ready before a reload gives up."),
        click.Option(["--pid-file"], default=None, envvar="ZASGI_PID_FILE", type=click.Path(dir_okay=False),
                     help="Write the supervisor's pid here (for `zasgi reload`); removed at exit."),
        click.Option(["--reload"], is_flag=True, envvar="ZASGI_RELOAD",
                     help="Development: rolling restart when the app's files change (no request lost)."),
        click.Option(["--reload-dir", "reload_dirs"], multiple=True, envvar="ZASGI_RELOAD_DIR",
                     type=click.Path(file_okay=False),
                     help="Directory to watch with --reload (repeatable) [default: --app-dir]."),
        click.Option(["--reload-include", "reload_includes"], multiple=True, envvar="ZASGI_RELOAD_INCLUDE",
                     help=f"Glob of files that trigger --reload (repeatable) "
                          f"[default: {' '.join(DEFAULT_INCLUDE)}]."),
        click.Option(["--reload-exclude", "reload_excludes"], multiple=True, envvar="ZASGI_RELOAD_EXCLUDE",
                     help="Glob of files --reload ignores (repeatable) [default: .* *.py[cod] *~]."),
    ]  # fmt: skip


def worker_config(app: str, connect: tuple[str, ...], **opts: Any) -> WorkerConfig:
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
            warn_blocked_loop_s=opts["warn_blocked_loop"],
            factory=opts["factory"],
            lifespan=opts["lifespan"],
            interface=opts["interface"],
            wsgi_threads=opts["wsgi_threads"],
            shm_bodies=opts["shm_bodies"],
            log_level=opts["log_level"],
            log_format=opts["log_format"],
            log_config=opts["log_config"],
            **({"resolve_interval_s": opts["resolve_interval"]} if "resolve_interval" in opts else {}),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def reload_config(opts: dict[str, Any]) -> ReloadConfig | None:
    dirs, include, exclude = opts["reload_dirs"], opts["reload_includes"], opts["reload_excludes"]
    if not opts["reload"]:
        if dirs or include or exclude:
            raise click.UsageError("--reload-dir/--reload-include/--reload-exclude need --reload")
        return None
    try:
        return ReloadConfig.build(dirs or (opts["app_dir"],), include, exclude)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def pool_config(opts: dict[str, Any]) -> PoolConfig:
    try:
        return PoolConfig(
            workers=opts["workers"],
            max_requests=opts["max_requests"],
            max_requests_jitter=opts["max_requests_jitter"],
            max_surge=opts["max_surge"],
            worker_start_timeout_s=opts["worker_start_timeout"],
            max_lingering=4 * opts["workers"] if opts["max_lingering"] is None else opts["max_lingering"],
            pid_file=opts["pid_file"],
            sched_batch=opts["sched_batch"],
            max_worker_rss_mib=opts["max_worker_rss"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


# ---------------------------------------------------------------- the front end's options


def frontend_params(*runs: fo.Run) -> list[click.Option]:
    """The table's options of these kinds, as a command that passes them on sees them: default
    None (not given: not passed, the front end's default holds), same names and variables."""
    return [opt.click_option(forwarded=True) for opt in fo.where(*runs)]


def frontend_args(opts: dict[str, Any], *runs: fo.Run) -> list[str]:
    """Pop the given front-end options of these kinds from ``opts``, as ``python -m frontend`` argv."""
    args: list[str] = []
    for opt in fo.where(*runs):
        value = opts.pop(opt.name, None)
        if value is not None:
            args += opt.argv(value)
    return args


def schemas() -> dict[str, configfile.Schema]:
    """The config-file keys of each command (run's include the front end's, forwarded)."""
    from . import appserver, frontend, run  # (these modules import this one)

    return {
        "run": configfile.Schema(run.command.params),
        "appserver": configfile.Schema(appserver.command.params),
        "frontend": configfile.Schema(frontend.command.params),
    }


def load_env_file(path: str | None) -> None:
    """The ``--env-file`` variables into our environment (the workers inherit it), as uvicorn does:
    after the options are read, so it configures the app, not zasgi; set variables win."""
    if path is None:
        return
    from dotenv import dotenv_values  # only when asked for

    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"--env-file {path}: {exc}") from None
    for name, value in values.items():
        if value is not None:
            os.environ.setdefault(name, value)
