"""A request's head as the wire's REQUEST / WS_CONNECT carry it: pure, the mirror of ``wire/scope.py``.

The front end forwards raw bytes (the target as sent, header names and values
untouched: the app server lowercases and builds the scope); what it decides
here is what only it can know: the path of an absolute-form target, the HTTP
version as a string, and the scheme, client and server, from the TCP
connection and TLS, or from proxy headers when the peer is a trusted proxy
(``proxy.py``). No I/O and no aiohttp objects: ``headers`` is any mapping with
``get`` (a ``CIMultiDict``), ``raw_headers`` the (name, value) byte pairs.
HTTP/1 (http_requests, ws_bridge) and HTTP/2 build heads with the same call.
"""

from __future__ import annotations

import ssl
from typing import Any

from .config import FrontendConfig
from .proxy import Origin, TrustedProxies, carries_proxy_headers, resolve
from .tls import TlsInfo

Address = tuple[str, int]
_VERSIONS = {(1, 1): "1.1", (1, 0): "1.0", (2, 0): "2"}  # (HTTP/2: ASGI says "2")


def address(value: Any) -> Address | None:
    """A socket address as the wire wants it (host, port); None for a UNIX socket and the like."""
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


def addresses(transport: Any) -> tuple[Address | None, Address | None]:
    """(client, server) of a transport (each a syscall: connection.py asks once per connection)."""
    if transport is None:
        return None, None
    return address(transport.get_extra_info("peername")), address(transport.get_extra_info("sockname"))


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, query) of a request target as sent; an absolute-form target's path only."""
    path, _, query = target.partition(b"?")
    if not path.startswith(b"/"):
        path = _origin_path(path)
    return path, query


def _origin_path(path: bytes) -> bytes:
    """The path of an absolute-form target (``http://host/path``); others (``*``) as they are."""
    if b"://" not in path:
        return path
    authority_path = path.split(b"://", 1)[1]
    slash = authority_path.find(b"/")
    return authority_path[slash:] if slash >= 0 else b"/"


class RequestHeads:
    """What every request of one listener shares to build its head: scheme, trusted proxies,
    root path, and the TLS extension."""

    __slots__ = ("scheme", "root_path", "has_tls", "_proxies", "_tls")

    def __init__(self, config: FrontendConfig, ssl_context: ssl.SSLContext | None) -> None:
        self.scheme = "https" if ssl_context is not None else "http"
        self.root_path = config.root_path
        self.has_tls = ssl_context is not None
        self._proxies = TrustedProxies(config.proxy.trusted) if config.proxy.enabled else None
        self._tls = TlsInfo(config.tls, ssl_context) if ssl_context is not None else None

    def build(
        self,
        method: str,
        target: str,  # as sent (aiohttp's str of the bytes, surrogate-escaped)
        version: Any,  # (major, minor)
        headers: Any,
        raw_headers: Any,
        client: Address | None,
        server: Address | None,
    ) -> tuple[tuple[Any, ...], tuple[Address | None] | None]:
        """REQUEST's fields from method to server, in wire order; and (client,) when trusted proxy
        headers named the client (the access log's client, as the scope's)."""
        path, _, query = target.encode("utf-8", "surrogateescape").partition(b"?")  # (split_target)
        if not path.startswith(b"/"):
            path = _origin_path(path)
        http_version = _VERSIONS.get(version) or f"{version[0]}.{version[1]}"
        scheme = self.scheme
        proxies = self._proxies
        proxied = None
        if (
            proxies is not None
            and client is not None
            and proxies.trusts(client[0])
            and carries_proxy_headers(headers)  # most requests: nothing to resolve
        ):
            origin = resolve(Origin(scheme, client, server), headers, proxies)
            scheme, client, server = origin.scheme, origin.client, origin.server
            proxied = (client,)
        head = (method, scheme, http_version, path, query, self.root_path, raw_headers, client, server)
        return head, proxied

    def ext(self, rid: str, tls: Any = None) -> dict[str, Any]:
        """REQUEST's ext map; ``tls`` a ``tls_of`` result (None without TLS)."""
        if tls is None:
            return {"request_id": rid}
        return {"request_id": rid, "tls": tls}

    def tls_of(self, transport: Any) -> Any:
        """The TLS extension of a connection (None without TLS): the same for all its requests."""
        return None if self._tls is None else self._tls.extension(transport)
