"""``zasgi run``'s port: checked and bound once, by the supervisor, for every front end.

One socket per front-end slot, with SO_REUSEPORT when there are several (Linux
spreads new connections over them by a hash of the client's address). A port
held by another program is found before anything starts: the first bind is
made without SO_REUSEPORT, which any other listener refuses, SO_REUSEPORT or
not, so we never silently share a port with another server.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import sys
from typing import Any

MAX_PER_CORE = 1  # more front ends than cores needs --force: they would only take turns on the CPU


class FleetError(Exception):
    """A bad --frontends request or an unusable port: one line for the operator."""


def check_count(
    count: int, *, force: bool = False, cores: int | None = None, platform: str = sys.platform
) -> None:
    """--frontends N: at least 1; several only on Linux (SO_REUSEPORT spreads connections there);
    not more than the cores without ``force``. Raises FleetError (one line)."""
    if count < 1:
        raise FleetError(f"--frontends {count}: at least 1 front end is needed")
    if count > 1 and not platform.startswith("linux"):
        raise FleetError(f"--frontends {count}: several front ends on one port need Linux (SO_REUSEPORT); "
                         f"this is {platform}")  # fmt: skip
    cores = cores if cores is not None else usable_cores()
    if count > cores * MAX_PER_CORE and not force:
        raise FleetError(f"--frontends {count}: more front ends than the {cores} CPU core(s) here; "
                         "pass --force to run them anyway")  # fmt: skip


def usable_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The CPU cores this process may run on: its affinity mask (where the OS has one), fewer under
    a cgroup v2 CPU quota (``docker run --cpus 1.5``: 2), as the container's share of the host."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open(cpu_max, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def auto_count(
    workers: int, *, single: bool = False, cores: int | None = None, platform: str = sys.platform
) -> int:
    """``--frontends auto``: one front end per worker, at most one per core (so uvicorn's
    ``--workers N`` and ours put HTTP on as many cores); 1 off Linux, and when ``single`` (a
    ``--uds`` socket or a fixed ``--backend tcp://``: one front end can have it). The default
    (README, "How many"): at ``-w 2`` on 2 cores a burst of 3,000 clients got 1.00x uvicorn's
    goodput with two front ends, 0.92x with one, whose core was the bound.
    """
    if single or not platform.startswith("linux"):
        return 1
    return max(1, min(workers, cores if cores is not None else usable_cores()))


def bind_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` bound TCP sockets on host:port (SO_REUSEPORT when more than one), not listening yet:
    each front end calls listen(). Raises FleetError (one line) if the port is taken."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise FleetError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    socks: list[socket.socket] = []
    try:
        # First without SO_REUSEPORT: a port some other program listens on (with the option or
        # not) refuses this bind, where with the option we could silently share its port.
        probe = _bound(family, kind, proto, addr, reuse_port=False)
        if count == 1:
            return [probe]
        addr = probe.getsockname()  # port 0: the one the kernel chose
        probe.close()
        for _ in range(count):
            socks.append(_bound(family, kind, proto, addr, reuse_port=True))
        return socks
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise FleetError(f"cannot listen on {host}:{port}: {_why(exc)}") from None


def _why(exc: OSError) -> str:
    """A failed bind in words; a taken port says whose (first bound without SO_REUSEPORT: not ours)."""
    return "Address already in use by another program" if exc.errno == errno.EADDRINUSE \
        else exc.strerror or str(exc)  # fmt: skip


def inherited_listener(fd: int) -> socket.socket:
    """``zasgi run --fd N`` (or systemd's socket): the bound socket every front end gets a copy of.
    Raises FleetError (one line) if it is not one."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise FleetError(f"cannot listen on fd {fd}: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise FleetError(f"cannot listen on fd {fd}: not a stream socket")
    sock.set_inheritable(True)
    return sock


def _bound(family: int, kind: int, proto: int, addr: Any, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_admin(host: str, port: int) -> socket.socket:
    """The admin socket every front end of the fleet serves (frontend/fleet_admin.py), bound and
    listening here: a probe waits in its queue until one of them takes it, and port 0 is one port for
    all. Raises FleetError (one line) if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = _bound(family, socket.SOCK_STREAM, 0, (host, port), reuse_port=False)
    except OSError as exc:
        raise FleetError(f"cannot listen on {host}:{port} (admin endpoint): {_why(exc)}") from None
    sock.listen(128)
    return sock
