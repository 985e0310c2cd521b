"""TLS termination: the server's SSLContext, and the ASGI ``tls`` extension per connection.

The extension's values (ASGI TLS extension spec) travel in REQUEST/WS_CONNECT
``ext["tls"]`` and the worker puts them in ``scope["extensions"]["tls"]``:
``server_cert`` (PEM), ``client_cert_chain`` (PEMs, the client's own first),
``client_cert_name`` (RFC 4514 subject), ``client_cert_error`` (always None:
a certificate that fails verification fails the handshake instead),
``tls_version`` (e.g. 0x0304) and ``cipher_suite`` (the IANA number).
Python before 3.13 exposes only the peer's own certificate, not the chain the
client sent, so the chain holds that one certificate.
"""

from __future__ import annotations

import ssl
from typing import Any

from .config import Tls

# ssl.SSLObject.version() -> the TLS extension's tls_version
_VERSIONS = {"SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# RFC 4514 §3 short names; others are written as their dotted OID, as the RFC asks.
_RDN_NAMES = {
    "commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
    "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET",
    "domainComponent": "DC", "userId": "UID",
}  # fmt: skip


class TlsError(ValueError):
    """The certificate, key or CA file cannot be used; the message names the option."""


def server_context(tls: Tls) -> ssl.SSLContext:
    """The listener's context (uvicorn's option semantics).

    Raises:
        TlsError: a file is missing or unreadable, the key does not match, the password is wrong.
    """
    assert tls.certfile is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.certfile, tls.keyfile, tls.keyfile_password)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load --ssl-certfile/--ssl-keyfile: {_reason(exc)}") from None
    if tls.ca_certs is not None:
        try:
            ctx.load_verify_locations(tls.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot load --ssl-ca-certs {tls.ca_certs}: {_reason(exc)}") from None
    ctx.verify_mode = ssl.VerifyMode(tls.cert_reqs)
    if tls.ciphers:
        try:
            ctx.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise TlsError(f"--ssl-ciphers {tls.ciphers!r} selects no cipher") from None
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return str(exc) or type(exc).__name__


class TlsInfo:
    """Builds the ``tls`` extension for a connection; what is the same for all is computed once."""

    def __init__(self, tls: Tls, ctx: ssl.SSLContext) -> None:
        self.server_cert = _first_pem(tls.certfile) if tls.certfile else None
        # Cipher names -> IANA numbers: OpenSSL's ids are 0x0300XXXX for TLS suites.
        self._cipher_ids = {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers()}

    def extension(self, transport: Any) -> dict[str, Any] | None:
        """The extension's values for this connection, None when it is not TLS."""
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        if sslobj is None:
            return None
        der = sslobj.getpeercert(binary_form=True)
        cipher = sslobj.cipher()
        return {
            "server_cert": self.server_cert,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": rfc4514_name(sslobj.getpeercert()) if der else None,
            "client_cert_error": None,
            "tls_version": _VERSIONS.get(sslobj.version() or ""),
            "cipher_suite": self._cipher_ids.get(cipher[0]) if cipher else None,
        }


def _first_pem(path: str) -> str | None:
    """The first certificate of a PEM file (the server's own; the rest is its chain)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    start = text.find(begin)
    stop = text.find(end, start)
    return text[start : stop + len(end)] + "\n" if start >= 0 and stop >= 0 else None


def rfc4514_name(cert: dict[str, Any] | None) -> str | None:
    """The subject of ``SSLObject.getpeercert()`` as an RFC 4514 string (last RDN first)."""
    if not cert or "subject" not in cert:
        return None
    rdns = []
    for rdn in reversed(cert["subject"]):
        rdns.append("+".join(f"{_RDN_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn))
    return ",".join(rdns)


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)
