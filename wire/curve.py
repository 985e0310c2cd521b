"""CurveZMQ between the tiers: key files, socket setup, and the front end's ZAP authenticator.

Key files are ZeroMQ certificates as ``zmq.auth.create_certificates`` writes
them (``NAME.key``: the public key; ``NAME.key_secret``: both keys). The
front end is the CURVE server: its own secret-key file plus a directory of
authorized workers' ``*.key`` files. A worker is a CURVE client: its own
secret-key file plus the front end's public ``.key`` file.

``WorkerAuthenticator`` is pyzmq's asyncio ZAP handler (so it runs on the
front end's loop) with a key check of our own: the authorized-keys directory
is re-read whenever its mtime changes (a key file added, removed or renamed
in), so granting or revoking a worker needs no restart, and every decision is
logged with the peer's address and key id. A refused worker gets a ZMTP
ERROR and no traffic; revoking a key refuses new connections only.

Part of the zmq layer beside the sans-IO core (like ``channel``); the
package's ``__init__`` does not import it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

log = logging.getLogger(__name__)

KEY_LEN = 40  # a z85-encoded 32-byte Curve25519 key
KEY_ID_LEN = 8  # what the logs show of a public key


class KeyFileError(ValueError):
    """A key file or directory is missing or unreadable; the message is one line for the user."""


@dataclass(frozen=True)
class ServerKeys:
    """The front end's own key pair (z85). The secret never shows in a repr."""

    public: bytes
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class ClientKeys:
    """A worker's own key pair and the front end's public key (z85); picklable, secret not in repr."""

    public: bytes
    secret: bytes = field(repr=False)
    server: bytes


def key_id(public: bytes) -> str:
    """The first characters of a z85 public key: enough to tell workers apart in a log."""
    return public[:KEY_ID_LEN].decode("ascii", "replace")


# ------------------------------------------------------------------ files


def keygen(path: str) -> tuple[str, str, bytes]:
    """Write ``PATH.key`` (public, 0644) and ``PATH.key_secret`` (0600); never overwrite.

    Returns (public file, secret file, public key). Raises KeyFileError.
    """
    directory, name = os.path.split(os.path.abspath(path))
    public_file, secret_file = f"{path}.key", f"{path}.key_secret"
    for existing in (public_file, secret_file):
        if os.path.lexists(existing):
            raise KeyFileError(f"{existing} already exists; not overwriting a key")
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)  # a new keys/ directory is private
        made_public, _ = zmq.auth.create_certificates(directory, name)
    except OSError as exc:
        raise KeyFileError(f"cannot write keys to {directory}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(made_public, 0o644)
    public, _ = zmq.auth.load_certificate(made_public)
    return public_file, secret_file, public


def _load(path: str, what: str, *, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        detail = "no such file" if not os.path.exists(path) else str(exc)
        raise KeyFileError(f"{what} {path}: {detail}") from None
    if secret and secret_key is None:
        raise KeyFileError(f"{what} {path} holds no secret key (give the .key_secret file)")
    for key in (public, secret_key) if secret else (public,):
        if not _valid(key):
            raise KeyFileError(f"{what} {path}: not a {KEY_LEN}-character z85 CurveZMQ key")
    return public, secret_key


def _valid(key: bytes | None) -> bool:
    if key is None or len(key) != KEY_LEN:
        return False
    try:
        z85.decode(key)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def load_server_keys(secret_file: str) -> ServerKeys:
    public, secret = _load(secret_file, "curve secret key", secret=True)
    assert secret is not None
    return ServerKeys(public, secret)


def load_client_keys(secret_file: str, server_file: str) -> ClientKeys:
    public, secret = _load(secret_file, "curve secret key", secret=True)
    server, _ = _load(server_file, "curve server key", secret=False)
    assert secret is not None
    return ClientKeys(public, secret, server)


def load_authorized(directory: str) -> frozenset[bytes]:
    """The public keys of every ``*.key`` file in ``directory``. Raises KeyFileError."""
    if not os.path.isdir(directory):
        raise KeyFileError(f"authorized keys {directory}: not a directory")
    try:
        keys = zmq.auth.load_certificates(directory)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"authorized keys {directory}: {exc}") from None
    return frozenset(k for k in keys if _valid(k))


# ----------------------------------------------------------------- sockets


def apply_server(sock: zmq.Socket[Any], keys: ServerKeys) -> None:
    """Make ``sock`` a CURVE server (before bind)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def apply_client(sock: zmq.Socket[Any], keys: ClientKeys) -> None:
    """Make ``sock`` a CURVE client of the server with ``keys.server`` (before connect)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server


# ----------------------------------------------------------- authenticator


class WorkerAuthenticator(AsyncioAuthenticator):
    """ZAP on the running loop: a CURVE client is let in iff its key is in ``directory``.

    Resource handling: ``start()`` before binding any CURVE server socket of
    the context (a ZAP-less context lets every key in); ``stop()`` closes the
    ZAP socket. Raises KeyFileError from the constructor when ``directory``
    cannot be read.
    """

    def __init__(self, ctx: zmq.Context[Any], directory: str) -> None:
        super().__init__(context=ctx, log=log.getChild("zap"))
        self.directory = directory
        self._keys = load_authorized(directory)
        self._mtime = self._stat()
        self._peer = "?"
        self.configure_curve_callback("*", self)
        log.info("%d authorized worker key(s) in %s", len(self._keys), directory)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # Frame 3 is the peer's address; it is ours to log, pyzmq keeps it to itself.
        self._peer = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        try:
            await super().handle_zap_message(msg)
        except Exception:  # a dead ZAP task would stall every later handshake
            log.exception("ZAP request from %s failed", self._peer)

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook: ``key`` is the client's z85 public key."""
        self._reload_if_changed()
        if key in self._keys:
            log.info("worker from %s accepted: key %s", self._peer, key_id(key))
            return True
        log.warning("worker from %s refused: key %s not in authorized keys (%s)", self._peer,
                    key_id(key), self.directory)  # fmt: skip
        return False

    def _stat(self) -> int | None:
        try:
            return os.stat(self.directory).st_mtime_ns
        except OSError:
            return None

    def _reload_if_changed(self) -> None:
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            keys = load_authorized(self.directory)
        except KeyFileError as exc:  # keep serving with what we had; say why
            log.error("%s; keeping the %d keys loaded before", exc, len(self._keys))
            return
        if keys != self._keys:
            log.info("authorized keys reloaded from %s: %d key(s) (%d added, %d removed)", self.directory,
                     len(keys), len(keys - self._keys), len(self._keys - keys))  # fmt: skip
        self._keys = keys
