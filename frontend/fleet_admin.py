"""One admin port for all of ``zasgi run``'s front ends.

With ``--frontends N`` every front end keeps its admin endpoint on a private port
(admin.py; ``zasgi status --pid-file`` and the other front ends read it) and also
serves one socket that ``zasgi run`` bound once (``--admin-fd``): the kernel hands
each connection to one of them, which answers for the whole fleet by asking the
others (their private URLs are in ``--admin-peers``, the list appserver/fleet.py
keeps of the serving ones)::

    GET /metrics   every front end's families, each sample labelled frontend="NAME"
    GET /workers   this front end's answer, plus "fleet": every front end's
    GET /readyz    200 while any front end is ready
    GET /healthz   200 while this process serves

Why a label and not sums: a front end replaced by a roll starts its counters
from zero, and a sum would fall with it (Prometheus would read a counter reset
and count the new one's whole value again); a series per front end resets
alone, which rate() handles. ``sum without (frontend)`` gives the host's
totals. A front end that does not answer within ``PEER_TIMEOUT_S`` is left out
of that answer and counted in ``zasgi_frontends{answered="false"}``, so a
scrape never waits on a stuck front end for longer than that.

A front end that starts to drain stops serving the shared socket first, so
probes and scrapes go to the ones that stay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .admin import Admin

log = logging.getLogger(__name__)

PEER_TIMEOUT_S = 2.0  # a scrape's wait for the slowest front end, at most
_OPENMETRICS = "application/openmetrics-text; version=1.0.0"  # asked of peers: keeps _created with its family


def labelled(families: Iterable[Metric], frontend: str) -> list[Metric]:
    """Copies of ``families`` with ``frontend=NAME`` on every sample."""
    out = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [s._replace(labels={"frontend": frontend, **s.labels}) for s in family.samples]
        out.append(copy)
    return out


def merged(parts: Iterable[list[Metric]]) -> list[Metric]:
    """One family per name holding every part's samples (first seen first); its help and type are the
    first part's (every front end of a fleet runs the same code)."""
    by_name: dict[str, Metric] = {}
    for families in parts:
        for family in families:
            seen = by_name.get(family.name)
            if seen is None:
                seen = Metric(family.name, family.documentation, family.type, family.unit)
                by_name[family.name] = seen
            if seen.type == family.type:
                seen.samples.extend(family.samples)
    return list(by_name.values())


def read_peers(path: str, own_url: str | None) -> list[str]:
    """The other front ends' admin URLs in ``path`` (one per line); none if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return [u for u in (line.strip() for line in f) if u and u != own_url]
    except OSError:
        return []


@dataclass(frozen=True)
class PeerAnswer:
    url: str
    snapshot: dict[str, Any] | None = None  # its /workers
    families: list[Metric] | None = None  # its /metrics, labelled
    error: str = ""

    @property
    def name(self) -> str:
        fe = (self.snapshot or {}).get("frontend")
        return str(fe.get("id", "")) if isinstance(fe, dict) else ""


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


class FleetAdmin:
    """The shared admin socket's endpoint in one front end (``admin``: its own endpoint)."""

    def __init__(self, admin: Admin, sock: socket.socket, peers_path: str) -> None:
        self._admin = admin
        self._sock = sock
        self._peers_path = peers_path
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        runner = await self._admin.runner({"/healthz": self._healthz, "/readyz": self._readyz,
                                           "/metrics": self._metrics, "/workers": self._workers,
                                           "/": self._index})  # fmt: skip
        await web.SockSite(runner, self._sock).start()
        self._runner = runner
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S))

    async def stop(self) -> None:
        """Stop serving the shared socket (the other front ends keep it)."""
        runner, self._runner = self._runner, None
        session, self._session = self._session, None
        if runner is not None:
            await runner.cleanup()
        if session is not None:
            await session.close()

    # ------------------------------------------------------------ asking the others

    def peers(self) -> list[str]:
        return read_peers(self._peers_path, self._admin.url)

    async def _get(self, url: str, accept: str = "*/*") -> tuple[int, str]:
        assert self._session is not None
        async with self._session.get(url, headers={"Accept": accept}) as resp:
            return resp.status, await resp.text()

    async def _ask(self, url: str, *, metrics: bool) -> PeerAnswer:
        """Its /workers (which names it), and with ``metrics`` its /metrics at the same time."""
        try:
            asks = [self._get(f"{url}/workers")]
            if metrics:
                asks.append(self._get(f"{url}/metrics", _OPENMETRICS))
            (status, text), *rest = await asyncio.gather(*asks)
            snapshot = json.loads(text) if status == 200 else None
            if not isinstance(snapshot, dict) or not isinstance(snapshot.get("frontend"), dict):
                return PeerAnswer(url, error=f"/workers answered HTTP {status}, not a front end's list")
            answer = PeerAnswer(url, snapshot)
            if not rest:
                return answer
            status, text = rest[0]
            if status != 200:
                return PeerAnswer(url, snapshot, error=f"/metrics answered HTTP {status}")
            families = labelled(text_string_to_metric_families(text), answer.name)  # type: ignore[no-untyped-call]
            return PeerAnswer(url, snapshot, families)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            why = f"no answer in {PEER_TIMEOUT_S:.0f} s" if isinstance(exc, TimeoutError) else str(exc)
            return PeerAnswer(url, error=why.splitlines()[0] if why else type(exc).__name__)

    async def ask_all(self, *, metrics: bool) -> list[PeerAnswer]:
        answers = await asyncio.gather(*(self._ask(url, metrics=metrics) for url in self.peers()))
        for answer in answers:
            if answer.error:
                log.warning("admin: front end %s left out of the fleet's answer: %s", answer.url,
                            answer.error)  # fmt: skip
        return list(answers)

    # ------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, text = self._admin.readiness()
        if ready:  # the common case asks nobody
            return web.Response(text=text)
        for answer in await self.ask_all(metrics=False):
            fe = (answer.snapshot or {}).get("frontend") or {}
            if fe.get("ready"):
                return web.Response(text=f"ready: front end {answer.name}\n")
        return web.Response(status=503, text="no ready front end\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        answers = await self.ask_all(metrics=True)
        own = labelled(self._admin.metrics_families(), self._admin.name)
        answered = 1 + sum(1 for a in answers if a.families is not None)
        frontends = GaugeMetricFamily(
            "zasgi_frontends",
            "Front ends sharing this admin port, by whether they answered this scrape "
            f"(within {PEER_TIMEOUT_S:g} s).",
            labels=["answered"],
        )
        frontends.add_metric(["true"], answered)
        frontends.add_metric(["false"], 1 + len(answers) - answered)
        named = [(self._admin.name, own), *((a.name, a.families) for a in answers if a.families)]
        families = merged([*(f for _, f in sorted(named, key=lambda n: n[0])), [frontends]])
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def _workers(self, request: web.Request) -> web.Response:
        own = self._admin.snapshot()
        fleet = [(self._admin.name, {"admin": self._admin.url, **own})]
        for answer in await self.ask_all(metrics=False):
            fleet.append((answer.name, {"admin": answer.url, **(answer.snapshot or {"error": answer.error})}))
        return web.json_response({**own, "fleet": [entry for _, entry in sorted(fleet, key=lambda e: e[0])]})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="zasgi admin (every front end of this zasgi run): /healthz /readyz /metrics "
                                 "/workers\n")  # fmt: skip
