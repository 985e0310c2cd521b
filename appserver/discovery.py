"""Which front ends a worker talks to: ``--connect`` endpoints, DNS names re-resolved.

    --connect endpoint       kind     connections
    ipc:///run/zasgi.sock    static   one, for the worker's life
    tcp://10.0.0.5:7000      static   one (an IP literal)
    tcp://frontend:7000      name     one per address the name resolves to, re-resolved
                                      every ``resolve_interval_s``: a new address joins
                                      (HELLO), a vanished one is retired (DRAIN, its
                                      in-flight streams finish, BYE, close)
    file:///run/zasgi/fes    file     one per endpoint listed in the file (one a line),
                                      re-read every ``FILE_POLL_S``: how ``zasgi run``
                                      tells its workers about the front ends it starts
                                      and retires (a front-end roll, supervisor.py)

A scaled compose service or a headless Kubernetes Service resolves to one
address per front end, so app servers find every front end through one name.

Rules, and why:
* A name that fails to resolve keeps the addresses it had: a DNS hiccup must
  not drain healthy front ends. A front end that really died is dropped by the
  heartbeat anyway and reconnected to cheaply.
* One address family per name: IPv4 if it has any IPv4 address, else IPv6. A
  dual-stack front end would otherwise be joined twice under one routing id
  (and ``localhost`` would wait for an ``::1`` nobody listens on).
* An address comes back only after its retiring connection is closed: two
  connections to one front end would share a routing id (ROUTER_HANDOVER).
* Ready = every front end of the first resolution that is still wanted has
  welcomed the worker, and at least one has.

The decisions are pure functions (``parse_endpoint``, ``pick_addresses``,
``plan``); ``FrontendSet`` applies them to live connections.

``python -m appserver.discovery [--check] [ENDPOINT ...]`` (default: $ZASGI_CONNECT)
prints what the endpoints resolve to; with ``--check`` it exits 1 unless this
network namespace holds an established TCP connection to each of them -- the
app server's container health/readiness probe, which needs no port of its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_RESOLVE_INTERVAL_S = 5.0
FILE_POLL_S = 0.2  # a file target is re-read this often: a front-end roll waits for every worker to join
RETRY_UNRESOLVED_S = 1.0  # while no front end is known at all, look again sooner

GetAddrInfo = Callable[[str, int], Awaitable[list[tuple[Any, ...]]]]


# ---------------------------------------------------------------- pure part


@dataclass(frozen=True)
class Target:
    """One ``--connect`` endpoint: ``host`` is the name to resolve, None for a static endpoint;
    ``path``: a file listing endpoints (``file://PATH``)."""

    endpoint: str
    host: str | None = None
    port: int = 0
    path: str | None = None


def parse_endpoint(endpoint: str) -> Target:
    """Classify an endpoint; ``ValueError`` (one line) for a tcp:// one without a usable host:port."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or not scheme:
        raise ValueError(f"{endpoint!r} is not a ZeroMQ endpoint like ipc:///path or tcp://host:port")
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"{endpoint!r}: a file:// list needs an absolute path (file:///run/zasgi/fes)")
        return Target(endpoint, path=rest)
    if scheme != "tcp" or ";" in rest:  # ipc, inproc, ...; or zmq's "source;destination" form: as given
        return Target(endpoint)
    host, colon, port_text = rest.rpartition(":")
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{endpoint!r}: a tcp:// endpoint needs host:port with a port in 1-65535")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == "*":
        raise ValueError(f"{endpoint!r}: '*' is for binding; connect to the front end's address or name")
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return Target(endpoint, bare, int(port_text))
    return Target(endpoint)  # an IP literal: nothing to resolve


def tcp_endpoint(address: str, port: int) -> str:
    return f"tcp://[{address}]:{port}" if ":" in address else f"tcp://{address}:{port}"


def pick_addresses(infos: Iterable[tuple[Any, ...]]) -> list[str]:
    """getaddrinfo results -> distinct addresses of one family (IPv4 if any), sorted."""
    found: dict[int, set[str]] = {}
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            found.setdefault(family, set()).add(str(sockaddr[0]))
    return sorted(found.get(socket.AF_INET) or found.get(socket.AF_INET6) or ())


@dataclass(frozen=True)
class Plan:
    add: tuple[str, ...] = ()
    retire: tuple[str, ...] = ()


def plan(active: Iterable[str], retiring: Iterable[str], wanted: Iterable[str]) -> Plan:
    """What to change so the connections match ``wanted``.

    ``active``: endpoints with a live connection; ``retiring``: endpoints whose
    connection is still draining, re-added only once it is closed.
    """
    active_set, wanted_set = set(active), set(wanted)
    return Plan(
        add=tuple(sorted(wanted_set - active_set - set(retiring))),
        retire=tuple(sorted(active_set - wanted_set)),
    )


def wanted_endpoints(resolved: Mapping[Target, Sequence[str]]) -> set[str]:
    return {endpoint for endpoints in resolved.values() for endpoint in endpoints}


# ---------------------------------------------------------------- resolution


async def resolve(
    targets: Sequence[Target], previous: Mapping[Target, Sequence[str]], getaddrinfo: GetAddrInfo
) -> tuple[dict[Target, tuple[str, ...]], dict[Target, str]]:
    """Each target's endpoints, and the targets that failed (with why); a failure keeps ``previous``."""
    names = [t for t in targets if t.host is not None]
    results = await asyncio.gather(*(getaddrinfo(str(t.host), t.port) for t in names), return_exceptions=True)
    answers = dict(zip(names, results, strict=True))
    resolved: dict[Target, tuple[str, ...]] = {}
    failed: dict[Target, str] = {}
    for target in targets:
        if target.path is not None:
            try:
                resolved[target] = read_list(target.path)
            except (OSError, ValueError) as exc:
                failed[target] = str(exc)
                resolved[target] = tuple(previous.get(target, ()))
            continue
        if target.host is None:
            resolved[target] = (target.endpoint,)
            continue
        answer = answers[target]
        addresses = [] if isinstance(answer, BaseException) else pick_addresses(answer)
        if addresses:
            resolved[target] = tuple(tcp_endpoint(a, target.port) for a in addresses)
        else:
            failed[target] = _why(answer)
            resolved[target] = tuple(previous.get(target, ()))
    return resolved, failed


def read_list(path: str) -> tuple[str, ...]:
    """The endpoints a file lists (one a line; blank lines and ``#`` comments skipped), each a
    static one (ipc://, or tcp:// with an IP address). Raises OSError, ValueError (one line)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    endpoints = tuple(line for line in lines if line)
    for endpoint in endpoints:
        target = parse_endpoint(endpoint)
        if target.host is not None or target.path is not None:
            raise ValueError(f"{path}: {endpoint!r}: list ipc:// or tcp://ADDRESS:PORT endpoints only")
    return endpoints


def write_list(path: str, endpoints: Sequence[str]) -> None:
    """Replace the file at once (a reader sees the old list or the new one, never half of one)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(f"{e}\n" for e in endpoints))
    os.replace(tmp, path)


def _why(answer: Any) -> str:
    if isinstance(answer, socket.gaierror):
        return answer.strerror or str(answer)
    if isinstance(answer, BaseException):
        return f"{type(answer).__name__}: {answer}"
    return "no IPv4 or IPv6 address"


def loop_getaddrinfo(host: str, port: int) -> Awaitable[list[tuple[Any, ...]]]:
    """getaddrinfo in the loop's thread pool (it may block on DNS)."""
    loop = asyncio.get_running_loop()
    return loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


# ---------------------------------------------------------------- live connections


class Connection(Protocol):
    """What ``FrontendSet`` needs of a connection (appserver.connection.FrontendConnection)."""

    endpoint: str
    welcomed: asyncio.Event
    refused: asyncio.Event

    def start(self) -> None: ...
    def drain(self) -> None: ...
    async def finish_streams(self, timeout_s: float) -> None: ...
    def close(self, reason: str = ...) -> None: ...


class FrontendSet:
    """A worker's connections, kept in step with what its ``--connect`` endpoints resolve to.

    ``connections`` is a live list of every connection that has a socket
    (active and retiring ones): the worker drains and closes exactly those.
    It changes only while running; after ``stop()`` it holds still.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        connect: Callable[[str], Connection],
        interval_s: float = DEFAULT_RESOLVE_INTERVAL_S,
        retire_timeout_s: float = 30.0,
        getaddrinfo: GetAddrInfo | None = None,
    ) -> None:
        self.connections: list[Any] = []
        self.refused = asyncio.Event()  # some front end refused this worker (it must exit)
        self._targets = [parse_endpoint(e) for e in dict.fromkeys(endpoints)]
        self._connect = connect
        self._interval_s = interval_s
        self._retire_timeout_s = retire_timeout_s
        self._getaddrinfo = getaddrinfo or loop_getaddrinfo
        self._resolved: dict[Target, tuple[str, ...]] = {}
        self._failing: set[Target] = set()  # warned about already; quiet until it resolves again
        self._active: dict[str, Connection] = {}
        self._retiring: dict[str, Connection] = {}
        self._initial: list[Connection] = []
        self._changed = asyncio.Event()  # pulsed when the set changes; ready() re-checks
        self._tasks: set[asyncio.Task[None]] = set()  # retirements
        self._watches: dict[str, asyncio.Task[None]] = {}  # endpoint -> refusal watch
        self._runner: asyncio.Task[None] | None = None

    @property
    def dynamic(self) -> bool:
        return any(t.host is not None or t.path is not None for t in self._targets)

    @property
    def active(self) -> list[Connection]:
        return list(self._active.values())

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="zasgi-discovery")

    def stop(self) -> None:
        """No more joining or retiring; retiring connections stay in ``connections`` for the worker."""
        for task in [self._runner, *self._tasks, *self._watches.values()]:
            if task is not None:
                task.cancel()
        self._tasks.clear()
        self._watches.clear()
        self._runner = None

    async def ready(self) -> None:
        """Return once the front ends resolved first (still wanted) have all welcomed us."""
        while not self._is_ready():
            waits = [asyncio.ensure_future(c.welcomed.wait()) for c in self._active.values()]
            waits.append(asyncio.ensure_future(self._changed.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            self._changed.clear()

    async def refresh(self) -> Plan:
        """Resolve once and apply the difference."""
        self._resolved, failed = await resolve(self._targets, self._resolved, self._getaddrinfo)
        for target, why in failed.items():
            if target not in self._failing:
                known = len(self._resolved[target])
                kept = f"keeping {known} known address(es)" if known else "retrying"
                log.warning("cannot resolve front ends %s: %s; %s", target.endpoint, why, kept)
        for target in self._failing - failed.keys():
            log.info("front ends %s resolve again", target.endpoint)
        self._failing = set(failed)
        change = plan(self._active, self._retiring, wanted_endpoints(self._resolved))
        for endpoint in change.retire:
            self._retire(endpoint)
        for endpoint in change.add:
            self._join(endpoint)
        if change.add and not self._initial:
            self._initial = list(self._active.values())
        if change.add or change.retire:
            self._changed.set()
        return change

    # ------------------------------------------------------------ internals

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # never let discovery take the worker down
                log.exception("front-end discovery failed; trying again")
            if not self.dynamic:
                return  # static endpoints: nothing will ever change
            known = bool(self._active)
            interval = self._interval_s if known else min(self._interval_s, RETRY_UNRESOLVED_S)
            if any(t.path is not None for t in self._targets):
                interval = min(interval, FILE_POLL_S)
            await asyncio.sleep(interval)

    def _is_ready(self) -> bool:
        current = [c for c in self._initial if self._active.get(c.endpoint) is c] or self.active
        return bool(current) and all(c.welcomed.is_set() for c in current)

    def _join(self, endpoint: str) -> None:
        connection = self._connect(endpoint)
        self._active[endpoint] = connection
        self.connections.append(connection)
        if self._initial:  # the first ones are announced by the worker's ready line
            log.info("front end %s appeared; connecting", endpoint)
        connection.start()
        self._watches[endpoint] = asyncio.ensure_future(self._watch_refusal(connection))

    def _retire(self, endpoint: str) -> None:
        connection = self._active.pop(endpoint)
        self._retiring[endpoint] = connection
        self._watches.pop(endpoint).cancel()
        log.info("front end %s no longer resolves; draining its connection", endpoint)
        task = asyncio.ensure_future(self._finish_retiring(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_retiring(self, connection: Connection) -> None:
        connection.drain()
        await connection.finish_streams(self._retire_timeout_s)
        connection.close("front end left discovery")
        del self._retiring[connection.endpoint]
        self.connections.remove(connection)
        log.info("front end %s forgotten", connection.endpoint)

    async def _watch_refusal(self, connection: Connection) -> None:
        await connection.refused.wait()
        self.refused.set()


# ---------------------------------------------------------------- the probe


def established_peers(proc_net: str = "/proc/net") -> set[tuple[str, int]]:
    """(address, port) of every ESTABLISHED TCP connection in this network namespace (Linux)."""
    peers: set[tuple[str, int]] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc_net}/{name}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01":  # 01: TCP_ESTABLISHED
                peers.add(_proc_address(fields[2]))
    return peers


def _proc_address(text: str) -> tuple[str, int]:
    """/proc/net/tcp{,6} "hex:port": addresses are 32-bit words in host (little-endian) order."""
    hex_address, _, hex_port = text.partition(":")
    raw = b"".join(bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, len(hex_address), 8))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), int(hex_port, 16)


def unconnected(resolved: Iterable[str], peers: set[tuple[str, int]]) -> list[str]:
    """The resolved tcp:// endpoints with no established connection (ipc and the like pass)."""
    missing = []
    for endpoint in resolved:
        if endpoint.startswith("tcp://") and ";" not in endpoint:
            host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
            if (host.strip("[]"), int(port)) not in peers:
                missing.append(endpoint)
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    checking = "--check" in args
    endpoints = [a for a in args if a != "--check"] or os.environ.get("ZASGI_CONNECT", "").split()
    if not endpoints:
        print("usage: python -m appserver.discovery [--check] [ENDPOINT ...] (default: $ZASGI_CONNECT)")
        return 2
    try:
        targets = [parse_endpoint(e) for e in endpoints]
    except ValueError as exc:
        print(f"zasgi: {exc}", file=sys.stderr)
        return 2

    async def getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)

    resolved, failed = asyncio.run(resolve(targets, {}, getaddrinfo))
    for target, why in failed.items():
        print(f"{target.endpoint}: cannot resolve: {why}", file=sys.stderr)
    found = sorted(wanted_endpoints(resolved))
    if not checking:
        print("\n".join(found))
        return 1 if failed else 0
    missing = unconnected(found, established_peers())
    if failed or not found or missing:
        print(f"not connected to: {' '.join(missing) or 'any front end'}", file=sys.stderr)
        return 1
    print(f"connected to {len(found)} front end(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
