"""The HTTP listening socket: TCP host:port, a Unix socket (--uds), an inherited fd (--fd),
or systemd socket activation (LISTEN_FDS); one job: a bound socket, or a ListenError naming
the address and why.

Which one: --fd, else --uds, else systemd's first socket when LISTEN_PID is this process,
else --host/--port. The caller (``asyncio``'s ``create_server``) calls ``listen(backlog)``.

A Unix socket file left by a crashed front end is removed before binding, but only once a
connect to it is refused (nobody listens); a live one is "address in use". Ours is removed
on close (``close``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed sockets start at fd 3


class ListenError(Exception):
    """The listener cannot be had; the message names the address (one line)."""

    exit_code = 3  # a boot error (README: Exit codes)


@dataclass(frozen=True, kw_only=True)
class Listener:
    sock: socket.socket
    where: str  # for messages: "127.0.0.1:8000", "unix socket /run/x.sock", "fd 3"
    uds_path: str | None = None  # ours to remove at close

    def url(self, scheme: str) -> str:
        if self.sock.family == socket.AF_UNIX:
            return f"{scheme}+unix://{self.sock.getsockname() or self.uds_path}"
        host, port = self.sock.getsockname()[:2]
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def close(self) -> None:
        self.sock.close()
        if self.uds_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.uds_path)


def open_listener(
    host: str,
    port: int,
    *,
    uds: str | None = None,
    uds_mode: int | None = None,
    fd: int | None = None,
    reuse_port: bool = False,
) -> Listener:
    """A bound, non-blocking stream socket. Raises ListenError.

    ``reuse_port``: bind host:port with SO_REUSEPORT, beside other front ends (server.py says
    what that does not guarantee)."""
    if fd is None and uds is None:
        fd = systemd_fd()
    if fd is not None:
        return Listener(sock=_from_fd(fd), where=f"fd {fd}")
    if uds is not None:
        return _unix(uds, uds_mode)
    return Listener(sock=_tcp(host, port, reuse_port), where=_host_port(host, port))


def inherited(sock: socket.socket) -> Listener:
    """A bound socket from our parent, to listen on (create_server calls listen again: harmless)."""
    if sock.type != socket.SOCK_STREAM or not sock.getsockname():
        raise ListenError(f"inherited socket {sock.fileno()} is not a bound stream socket")
    sock.setblocking(False)
    return Listener(sock=sock, where=f"inherited socket {sock.fileno()}")


def systemd_fd() -> int | None:
    """The first socket systemd passed this process (socket activation), or None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    return SD_LISTEN_FDS_START if count >= 1 else None


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tcp(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {_host_port(host, port)}: --host {host!r}: {exc.strerror}"
        ) from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # several front ends on one port, the kernel spreading connections (Linux)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {_host_port(host, port)}: {exc.strerror or exc}") from None
    return sock


def _unix(path: str, mode: int | None) -> Listener:
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on unix socket {path}: {exc.strerror or exc}") from None
    return Listener(sock=sock, where=f"unix socket {path}", uds_path=path)


def _remove_stale(path: str) -> None:
    """Remove a socket file nobody listens on (a crashed front end's); leave anything else."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return  # not a socket: bind fails with "Address already in use", naming the path
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        probe.close()


def _from_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenError(f"cannot listen on fd {fd}: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM or sock.family not in (
        socket.AF_INET,
        socket.AF_INET6,
        socket.AF_UNIX,
    ):
        sock.detach()
        raise ListenError(f"cannot listen on fd {fd}: not a TCP or Unix stream socket")
    sock.setblocking(False)
    return sock
