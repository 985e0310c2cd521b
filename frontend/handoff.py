"""Idle keep-alive connections handed to the successor front end (SCM_RIGHTS), so a front-end roll
does not even close them.

A retiring front end (retire.py) would otherwise end each keep-alive connection: after its next
response (``Connection: close``) or at its keep-alive timeout. With a hand-off path (``zasgi run``
gives every front end of a slot the same one), the newest front end of the slot listens there
(``HandoffServer``: it unlinks whatever was bound before, so the path always reaches the newest)
and the retiring one sends it every connection that is idle: no request in progress or queued, no
partial head read, nothing left to write, plain TCP (a TLS session's state cannot travel). One
datagram per connection on a SOCK_SEQPACKET socket, carrying its file descriptor; the successor
adopts it as a new connection (``loop.connect_accepted_socket``), the sender closes its own copy,
which sends nothing to the client (the socket is still open in the successor). Bytes the client
sends meanwhile wait in the kernel's buffer of that socket and are read by the successor.

A connection never caught idle (a client sending back to back) is not handed off: after
``HANDOFF_WINDOW_S`` the retiring front end falls back to ``Connection: close`` for the rest. A
hand-off that fails (no successor on the path, a send error) falls back the same way at once.

Linux only (SOCK_SEQPACKET Unix sockets); elsewhere nothing is handed off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

HANDOFF_WINDOW_S = 1.0  # the retiring front end hands over what is idle for this long, then closes the rest
SEND_TIMEOUT_S = 1.0
MARK = b"C"  # one byte per connection handed over: the datagram that carries its descriptor


def supported() -> bool:
    return hasattr(socket, "SOCK_SEQPACKET") and hasattr(socket, "send_fds") and os.name == "posix"


class HandoffServer:
    """Adopts the connections a retiring predecessor sends to ``path``."""

    def __init__(self, path: str, adopt: Callable[[socket.socket], None]) -> None:
        self.path = path
        self._adopt = adopt
        self._sock: socket.socket | None = None
        self._inode = 0
        self._peers: set[socket.socket] = set()
        self.adopted = 0

    def start(self) -> None:
        """Bind ``path`` (replacing a predecessor's binding: the path reaches the newest)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)  # whoever connects here can hand us client sockets
            sock.listen(8)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._inode = os.stat(self.path).st_ino
        loop.add_reader(sock.fileno(), self._accept)

    def is_ours(self) -> bool:
        """Whether ``path`` still reaches us (no successor bound it since)."""
        try:
            return os.stat(self.path).st_ino == self._inode
        except OSError:
            return False

    def _accept(self) -> None:
        assert self._sock is not None
        try:
            peer, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        peer.setblocking(False)
        self._peers.add(peer)
        asyncio.get_running_loop().add_reader(peer.fileno(), self._receive, peer)

    def _receive(self, peer: socket.socket) -> None:
        try:
            _, fds, _, _ = socket.recv_fds(peer, len(MARK), 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("hand-off from the predecessor failed: %s", exc)
            fds = []
            self._drop(peer)
            return
        if not fds:  # EOF: the predecessor is done
            self._drop(peer)
            return
        for fd in fds:
            try:
                client = socket.socket(fileno=fd)
            except OSError:  # not a socket
                os.close(fd)
                continue
            if client.type != socket.SOCK_STREAM:
                client.close()
                continue
            client.setblocking(False)
            self.adopted += 1
            self._adopt(client)

    def _drop(self, peer: socket.socket) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(peer.fileno())
        self._peers.discard(peer)
        peer.close()

    def close(self) -> None:
        for peer in list(self._peers):
            self._drop(peer)
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            if self.is_ours():
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            sock.close()


class HandoffClient:
    """The retiring side: a connection to the successor's ``HandoffServer``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent = 0
        self.failed = False  # a send failed: hand nothing more

    @classmethod
    def connect(cls, path: str) -> HandoffClient | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(SEND_TIMEOUT_S)  # small datagrams to a local peer: never long
        try:
            sock.connect(path)
        except OSError as exc:
            log.info("no successor to hand connections to at %s (%s)", path, exc.strerror)
            sock.close()
            return None
        return cls(sock)

    def send(self, fd: int) -> bool:
        """Send one connection's descriptor; whether the successor has it now."""
        if self.failed:
            return False
        try:
            socket.send_fds(self._sock, [MARK], [fd])
        except OSError as exc:
            log.warning("handing a connection to the successor failed: %s", exc)
            self.failed = True
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()


def descriptor(transport: Any) -> int | None:
    """The connection's socket descriptor, for a plain TCP transport; None otherwise (TLS...)."""
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else None
    except (OSError, ValueError):
        return None
