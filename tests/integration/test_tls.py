"""TLS termination at the front end: https and wss through ``zasgi run``, the ASGI ``tls``
extension as the app sees it, client certificates, and clear start-up errors.

Certificates are made here with trustme (a CA for the server, another for clients).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.sync.client import connect as ws_connect

from tests.helpers.processes import REPO, Proc, zasgi

from .conftest import PROBE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
PASSWORD = "correct horse"
TLS13_SUITES = {0x1301, 0x1302, 0x1303}
HANDSHAKE_TIMEOUT_S = 3.0  # short, for the silent-client test; real clients here handshake at once


@dataclass
class TlsServer:
    url: str  # https://127.0.0.1:PORT
    server_ca: trustme.CA
    client_ca: trustme.CA
    server_cert_pem: str
    proc: Proc

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.server_ca.configure_trust(ctx)
        if with_cert:
            self.client_ca.issue_cert(
                "alice@example.com", common_name="alice", organization_name="Example, Inc."
            ).configure_cert(ctx)
        return ctx


def _encrypted_key(leaf: trustme.LeafCert) -> bytes:
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    tmp = tmp_path_factory.mktemp("tls")
    server_ca, client_ca = trustme.CA(), trustme.CA(organization_name="Client CA")
    leaf = server_ca.issue_cert("127.0.0.1", "localhost")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    (tmp / "server.pem").write_bytes(chain)
    (tmp / "server.key").write_bytes(_encrypted_key(leaf))
    client_ca.cert_pem.write_to_path(str(tmp / "client-ca.pem"))
    (tmp / "probe").mkdir()
    env = {
        "PROBE_DIR": str(tmp / "probe"),
        # `zasgi run` passes its environment to the front end: every front-end option works this way.
        "ZASGI_SSL_CERTFILE": str(tmp / "server.pem"),
        "ZASGI_SSL_KEYFILE": str(tmp / "server.key"),
        "ZASGI_SSL_KEYFILE_PASSWORD": PASSWORD,
        "ZASGI_SSL_CA_CERTS": str(tmp / "client-ca.pem"),
        "ZASGI_SSL_CERT_REQS": "1",  # optional: clients with and without a certificate
        "ZASGI_TIMEOUT_REQUEST_HEADER": str(HANDSHAKE_TIMEOUT_S),  # also bounds the TLS handshake
    }
    proc = Proc("run", zasgi("run", PROBE, "--port", "0", "--workers", "1"), tmp, env)
    try:
        url = proc.wait_for(r"zasgi running on (https://\S+)", 60).group(1)
        yield TlsServer(url, server_ca, client_ca, leaf.cert_chain_pems[0].bytes().decode(), proc)
    finally:
        proc.kill_tree()


def _get_scope(server: TlsServer, **kw: bool) -> dict:
    with httpx.Client(verify=server.client_context(**kw), timeout=30) as client:
        resp = client.get(server.url + "/scope")
    assert resp.status_code == 200
    return resp.json()


def test_https_scope_and_tls_extension(tls_server: TlsServer) -> None:
    scope = _get_scope(tls_server)
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert tls["server_cert"] == tls_server.server_cert_pem
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in TLS13_SUITES


def test_client_certificate_reaches_the_app(tls_server: TlsServer) -> None:
    scope = _get_scope(tls_server, with_cert=True)
    tls = scope["extensions"]["tls"]
    (pem,) = tls["client_cert_chain"]
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.subject.rfc4514_string() == tls["client_cert_name"]  # the reference implementation
    assert tls["client_cert_name"].startswith("CN=alice,")
    assert "O=Example\\, Inc." in tls["client_cert_name"]  # RFC 4514 escaping


def test_wss_scope(tls_server: TlsServer) -> None:
    url = tls_server.url.replace("https://", "wss://") + "/ws/echo"
    with ws_connect(url, ssl=tls_server.client_context(with_cert=True), open_timeout=30) as ws:
        ws.send("scope")
        scope = json.loads(ws.recv(timeout=30))
    assert scope["scheme"] == "wss"
    tls = scope["extensions"]["tls"]
    assert tls["tls_version"] == 0x0304 and len(tls["client_cert_chain"]) == 1
    assert tls["server_cert"] == tls_server.server_cert_pem


def test_plain_http_on_the_tls_port_is_refused_cleanly(tls_server: TlsServer) -> None:
    host, port = tls_server.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"HTTP/1.1 200")
    assert _get_scope(tls_server)["scheme"] == "https"  # still serving


def test_silent_client_is_dropped_after_the_handshake_timeout(tls_server: TlsServer) -> None:
    """TCP open, no ClientHello: closed after --timeout-request-header, not uvloop's 60 s."""
    host, port = tls_server.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.settimeout(40)  # well under 60 s: the old bound fails this test, a loaded machine does not
        started = time.monotonic()
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - started
    assert data == b"" and HANDSHAKE_TIMEOUT_S - 0.5 <= waited < 40, waited
    assert _get_scope(tls_server)["scheme"] == "https"  # still serving


def test_untrusted_client_certificate_fails_the_handshake(tls_server: TlsServer) -> None:
    ctx = ssl.create_default_context()
    tls_server.server_ca.configure_trust(ctx)
    trustme.CA().issue_cert("mallory@example.com").configure_cert(ctx)  # not from the client CA
    with pytest.raises((ssl.SSLError, httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        with httpx.Client(verify=ctx, timeout=10) as client:
            client.get(tls_server.url + "/scope")
    assert _get_scope(tls_server)["scheme"] == "https"


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["--ssl-certfile", "/nonexistent/cert.pem"], "cannot load --ssl-certfile", 1),
        (["--ssl-keyfile", "/tmp/k.pem"], "need --ssl-certfile", 2),
        (["--ssl-certfile", "/x.pem", "--ssl-cert-reqs", "2"], "needs --ssl-ca-certs", 2),
        (["--ssl-cert-reqs", "3"], "ssl-cert-reqs", 2),
    ],
)
def test_bad_tls_options_are_one_line(args: list[str], needle: str, code: int, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "frontend", "--port", "0", "--backend", f"ipc://{tmp_path}/fe.sock", *args],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_wrong_key_password_is_one_line(tls_server: TlsServer, tmp_path: Path) -> None:
    cert = tls_server.proc.log_path.parent / "server.pem"
    key = tls_server.proc.log_path.parent / "server.key"
    proc = subprocess.run(
        [sys.executable, "-m", "frontend", "--port", "0", "--backend", f"ipc://{tmp_path}/fe.sock",
         "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--ssl-keyfile-password", "wrong"],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot load --ssl-certfile" in proc.stderr and "Traceback" not in proc.stderr
