"""The admin endpoint: a small aiohttp app on its own port (loopback by default).

    GET /healthz   200 while the process serves (liveness)
    GET /readyz    200 with at least one READY worker, else 503 (also once shutdown began)
    GET /metrics   Prometheus text (or OpenMetrics, by Accept) via prometheus_client
    GET /workers   JSON: this front end and its workers (what ``zasgi status`` shows)

Kept apart from the client-facing listener so that probes and scrapes never
wait behind client traffic, are never exposed with it, and never appear in
the access log or the request metrics. Everything is read from the
dispatcher when asked; nothing here runs between requests. Its responses get
the fields the client-facing ones get (``fields``: ``Server: zasgi`` unless
--no-server-header, ``Date`` unless --no-date-header, the --header fields),
not aiohttp's ``Server`` (which names Python, aiohttp and their versions);
only a request aiohttp's parser refused gets aiohttp's own fields, with
``Server: zasgi``.

A port given by the operator that cannot be bound stops the front end (one
line); the default one (``Admin.required`` false) only turns the endpoint off,
with a warning, so several front ends on one host do not fight over it.
``zasgi run`` with several front ends gives each a private port and one shared
socket besides, where any of them answers for all (fleet_admin.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp.web_response as aiohttp_response
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.exposition import choose_encoder

from .config import Admin as AdminConfig
from .config import Headers
from .fleet_admin import FleetAdmin
from .http1 import SERVER_NAME
from .metrics import Metrics

if TYPE_CHECKING:
    from .dispatch import Dispatcher

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _BadRequestsInOneLine(logging.Filter):
    """aiohttp logs a request its parser refused as an error with a traceback: bad input is no bug of
    ours, so one warning line instead (as uvicorn's "Invalid HTTP request received")."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            what = (str(exc.message).splitlines() or [""])[0][:100]  # its first line: no request bytes
            record.msg, record.args = "admin endpoint: bad request from %s (%d %s)", (peer, exc.code, what)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_server_log = logging.getLogger(__name__ + ".server")  # the log of aiohttp's request handler
_server_log.addFilter(_BadRequestsInOneLine())


class Admin:
    def __init__(
        self,
        config: AdminConfig | None,
        dispatcher: Dispatcher,
        metrics: Metrics,
        *,
        fields: Headers,
        reuse_port: bool = False,
    ) -> None:
        self._config = config
        self._fields = fields
        self._reuse_port = reuse_port  # beside our predecessor on its port during a front-end roll
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self._fleet: FleetAdmin | None = None
        self._started = time.monotonic()
        self._stopping = False
        self.url: str | None = None  # once started
        self.http_url = ""  # the client-facing URL, shown in /workers

    async def start(self) -> str | None:
        """Bind and serve; the admin URL, or None when off.

        Raises:
            OSError: a required port cannot be bound.
        """
        config = self._config
        if config is None:
            return None
        runner = await self.runner({"/healthz": self._healthz, "/readyz": self._readyz,
                                    "/metrics": self._metrics_page, "/workers": self._workers,
                                    "/": self._index})  # fmt: skip
        try:
            await web.TCPSite(
                runner, config.host, config.port, reuse_address=True, reuse_port=self._reuse_port or None
            ).start()
        except OSError as exc:
            await runner.cleanup()
            if config.required:
                raise OSError(
                    exc.errno, f"admin endpoint {config.host}:{config.port}: {exc.strerror}"
                ) from None
            log.warning("admin endpoint off: cannot bind %s:%d (%s); pass --admin-port",
                        config.host, config.port, exc.strerror)  # fmt: skip
            return None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        log.info("admin endpoint on %s", self.url)
        if config.fleet_fd is not None and config.peers_path is not None:
            self._fleet = FleetAdmin(self, socket.socket(fileno=config.fleet_fd), config.peers_path)
            await self._fleet.start()
        return self.url

    async def runner(self, routes: dict[str, Handler]) -> web.AppRunner:
        """An admin app answering GET ``routes`` with our response fields, set up (this endpoint's,
        and the fleet's shared one: fleet_admin.py)."""
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        app.on_response_prepare.append(self._add_fields)
        # aiohttp's own answers (a request its parser refused) skip that hook and take this
        # module global: there at least "zasgi", not the Python and aiohttp versions.
        aiohttp_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]
        runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=_server_log)
        await runner.setup()
        return runner

    async def shutting_down(self) -> None:
        """From now on /readyz says 503: load balancers stop sending while we drain; the fleet's
        shared port is left to the front ends that stay."""
        self._stopping = True
        await self._leave_fleet()

    async def stop(self) -> None:
        await self._leave_fleet()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------ handlers

    async def _leave_fleet(self) -> None:
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.stop()

    async def _add_fields(self, request: web.Request, response: web.StreamResponse) -> None:
        # Runs after aiohttp filled in its own Server and Date fields, before the head is written.
        fields, headers = self._fields, response.headers
        if fields.server:
            headers["Server"] = SERVER_NAME
        else:
            headers.popall("Server", None)
        if not fields.date:
            headers.popall("Date", None)
        for name, value in fields.extra:
            headers.setdefault(name, value)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, text = self.readiness()
        return web.Response(status=200 if ready else 503, text=text)

    def readiness(self) -> tuple[bool, str]:
        """Whether /readyz says 200, and its text."""
        if self._stopping:
            return False, "shutting down\n"
        ready = self._dispatcher.pool.ready_count()
        if not ready:
            return False, "no ready worker\n"
        return True, f"ready: {ready} worker{'s' if ready > 1 else ''}\n"

    @property
    def name(self) -> str:
        """This front end's name (``--name``; /workers' frontend.id)."""
        return str(self._dispatcher.frontend_id)

    def metrics_families(self) -> list[Any]:
        """This front end's metric families now (what /metrics exposes)."""
        return list(self._metrics.registry.collect())

    async def _metrics_page(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _workers(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="zasgi front end admin: /healthz /readyz /metrics /workers\n")

    def snapshot(self) -> dict[str, Any]:
        """This front end and its workers, as /workers returns them."""
        d = self._dispatcher
        now = asyncio.get_running_loop().time()
        lingering = d.pool.lingering()
        return {
            "frontend": {
                "id": d.frontend_id,
                "pid": os.getpid(),
                "url": self.http_url,
                "backend": d.endpoint,
                "uptime_s": round(time.monotonic() - self._started, 3),
                "queue": {"http": len(d.slots), "websocket": len(d.ws_slots)},
                "queue_mode": d.slots.policy.mode.value,
                "shed": dict(d.slots.shed),
                "streams_open": d.streams_open,
                "ready": not self._stopping and d.pool.ready_count() > 0,
                "lingering": {"workers": len(lingering), "sessions": sum(_sessions(r) for r in lingering)},
            },
            "workers": [_worker(record, now) for record in d.pool],
        }


def _worker(record: Any, now: float) -> dict[str, Any]:
    info = record.info if isinstance(record.info, dict) else {}
    joined = record.welcomed_at
    return {
        "id": record.worker_id,
        "host": str(info.get("host", "")),
        "pid": record.pid,
        "app": str(info.get("app", "")),
        "state": record.state.value,
        "in_flight": record.in_flight,
        "capacity": record.capacity,
        "limit": record.limit,  # what it takes now: its capacity, or its adaptive limit (feature "limit")
        "adaptive": "limit" in record.features,
        "ws_in_flight": record.ws_in_flight,
        "ws_capacity": record.ws_capacity,
        "uptime_s": round(now - joined, 3) if joined is not None else 0.0,  # since it joined us
        "served": record.served,
        "features": sorted(record.features),
        # Its event loop stalled (PULSE, Rule 9a): for how long, and the request on it; None while it runs.
        "blocked_s": round(now - record.blocked_since, 1) if record.blocked_since is not None else None,
        "blocked_by": _stall(record.stall) if record.blocked_since is not None else None,
    }


def _stall(stall: tuple[str, str, str]) -> str:
    rid, method, path = stall
    return f"{rid or '-'} {method} {path}" if method else ""


def _sessions(record: Any) -> int:
    """What a lingering worker still serves: its WebSockets and responses under way."""
    return record.in_flight + record.ws_in_flight  # type: ignore[no-any-return]
