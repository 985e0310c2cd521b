"""frontend/proxy.py: proxy headers -> scope client/scheme/server, trusted peers only. Pure, no sockets."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from frontend.proxy import Origin, TrustedProxies, carries_proxy_headers, parse_forwarded, resolve

LOCAL = Origin("http", ("127.0.0.1", 50000), ("127.0.0.1", 8000))
TRUST_LOCAL = TrustedProxies("127.0.0.1")


def _resolve(
    *pairs: tuple[str, str], origin: Origin = LOCAL, trusted: TrustedProxies = TRUST_LOCAL
) -> Origin:
    return resolve(origin, CIMultiDict(pairs), trusted)


# ------------------------------------------------------------------ trusted peers


@pytest.mark.parametrize(
    ("spec", "host", "trusted"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("10.0.0.0/8, 192.168.1.1", "10.20.30.40", True),
        ("10.0.0.0/8, 192.168.1.1", "192.168.1.1", True),
        ("10.0.0.0/8, 192.168.1.1", "11.0.0.1", False),
        ("*", "203.0.113.9", True),
        ("*", "not-an-ip", True),
        ("::1", "::1", True),
        ("fd00::/8", "fd12::1", True),
        ("127.0.0.1", "::ffff:127.0.0.1", True),  # a dual-stack socket's view of an IPv4 peer
        ("127.0.0.1", "unknown", False),
        ("", "127.0.0.1", False),
    ],
)
def test_trusted_proxies(spec: str, host: str, trusted: bool) -> None:
    assert TrustedProxies(spec).trusts(host) is trusted


@pytest.mark.parametrize("spec", ["localhost", "10.0.0.0/33", "1.2.3.4.5", "*.example.com"])
def test_bad_trusted_entry_is_a_clear_error(spec: str) -> None:
    with pytest.raises(ValueError, match="forwarded-allow-ips"):
        TrustedProxies(spec)


# ------------------------------------------------------------------ X-Forwarded-*


def test_untrusted_peer_headers_are_ignored() -> None:
    origin = Origin("http", ("203.0.113.5", 4000), ("10.0.0.1", 80))
    got = _resolve(("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"), origin=origin)
    assert got == origin


def test_x_forwarded_for_proto_host() -> None:
    got = _resolve(
        ("X-Forwarded-For", "198.51.100.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "example.com"),
    )
    assert got == Origin("https", ("198.51.100.7", 0), ("example.com", 443))


def test_x_forwarded_host_with_port_and_x_forwarded_port() -> None:
    assert _resolve(("X-Forwarded-Host", "example.com:8443")).server == ("example.com", 8443)
    assert _resolve(("X-Forwarded-Host", "[2001:db8::1]")).server == ("2001:db8::1", 80)
    got = _resolve(("X-Forwarded-Host", "example.com"), ("X-Forwarded-Port", "9000"))
    assert got.server == ("example.com", 9000)


def test_x_forwarded_for_walks_past_trusted_hops_only() -> None:
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    # The client forged the leftmost entry; 10.1.1.1 is our proxy; 198.51.100.7 the real client.
    got = _resolve(("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.1.1.1"), trusted=trusted)
    assert got.client == ("198.51.100.7", 0)
    # All hops trusted: the leftmost is the client (as uvicorn).
    got = _resolve(("X-Forwarded-For", "10.9.9.9, 10.1.1.1"), trusted=trusted)
    assert got.client == ("10.9.9.9", 0)


def test_x_forwarded_headers_on_several_lines_are_one_list() -> None:
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    got = _resolve(("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "10.1.1.1"), trusted=trusted)
    assert got.client == ("198.51.100.7", 0)


def test_list_valued_proto_follows_the_chosen_hop() -> None:
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    got = _resolve(
        ("X-Forwarded-For", "198.51.100.7, 10.1.1.1"), ("X-Forwarded-Proto", "https, http"), trusted=trusted
    )
    assert (got.client, got.scheme) == (("198.51.100.7", 0), "https")
    # Not one per hop: the nearest proxy's (rightmost) value.
    got = _resolve(
        ("X-Forwarded-For", "198.51.100.7, 10.1.1.1"), ("X-Forwarded-Proto", "https"), trusted=trusted
    )
    assert got.scheme == "https"


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [("https", "https"), ("HTTPS", "https"), ("wss", "https"), ("ws", "http"), ("ftp", "http")],
)
def test_x_forwarded_proto_values(proto: str, scheme: str) -> None:
    assert _resolve(("X-Forwarded-Proto", proto)).scheme == scheme


@pytest.mark.parametrize("host", ["exa mple.com", "a@b", "example.com:99999", "example.com:x", "[zz::1]", ""])
def test_bad_x_forwarded_host_is_ignored(host: str) -> None:
    assert _resolve(("X-Forwarded-Host", host)).server == LOCAL.server


@pytest.mark.parametrize(
    ("value", "client"),
    [
        ("198.51.100.7:4711", ("198.51.100.7", 0)),  # a proxy's port is not the client's
        ("[2001:db8::7]:4711", ("2001:db8::7", 0)),
        ("2001:db8::7", ("2001:db8::7", 0)),
        ("unknown", None),
        ("garbage<script>", None),
    ],
)
def test_x_forwarded_for_node_forms(value: str, client: tuple[str, int] | None) -> None:
    assert _resolve(("X-Forwarded-For", value)).client == client


# ------------------------------------------------------------------ RFC 7239 Forwarded


def test_forwarded_rfc7239_examples() -> None:
    got = _resolve(("Forwarded", 'for="_gazonk"'))
    assert got.client is None  # obfuscated: no address to give
    got = _resolve(("Forwarded", 'For="[2001:db8:cafe::17]:4711"'))
    assert got.client == ("2001:db8:cafe::17", 4711)
    got = _resolve(("Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43"))
    assert got == Origin("http", ("192.0.2.60", 0), LOCAL.server)
    got = _resolve(("Forwarded", "for=192.0.2.43, for=198.51.100.17"))
    assert got.client == ("198.51.100.17", 0)  # 198.51.100.17 is not trusted: it is the client


def test_forwarded_proto_and_host_come_from_the_chosen_element() -> None:
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    value = (
        'for=198.51.100.7:1234;proto=https;host="shop.example:8443", for=10.1.1.1;proto=http;host=internal'
    )
    got = _resolve(("Forwarded", value), trusted=trusted)
    assert got == Origin("https", ("198.51.100.7", 1234), ("shop.example", 8443))


def test_forwarded_wins_over_x_forwarded() -> None:
    got = _resolve(("X-Forwarded-For", "1.1.1.1"), ("Forwarded", "for=2.2.2.2;proto=https"))
    assert (got.client, got.scheme) == (("2.2.2.2", 0), "https")


@pytest.mark.parametrize(
    "value",
    ['for="unterminated', "for", "for=1.2.3.4;for=5.6.7.8", "for=1.2.3.4 proto=https", "=x", 'for=a"b'],
)
def test_malformed_forwarded_is_ignored(value: str) -> None:
    assert parse_forwarded(value) is None
    assert _resolve(("Forwarded", value)) == LOCAL


def test_parse_forwarded_quoting_and_empty_members() -> None:
    value = 'for="\\"q\\"";Proto=HTTPS , , for=1.2.3.4'
    assert parse_forwarded(value) == [{"for": '"q"', "proto": "HTTPS"}, {"for": "1.2.3.4"}]


# ------------------------------------------------------------------ properties

_ipv4 = st.ip_addresses(v=4).map(str)
_untrusted = st.ip_addresses(v=4).filter(lambda ip: not ip.is_loopback and ip not in _NET).map(str)
_NET = ipaddress.ip_network("10.0.0.0/8")
_trusted_hop = st.ip_addresses(network="10.0.0.0/8").map(str)


@given(forged=st.lists(_ipv4, max_size=4), client=_untrusted, proxies=st.lists(_trusted_hop, max_size=4))
def test_client_is_the_first_untrusted_hop_from_the_right(
    forged: list[str], client: str, proxies: list[str]
) -> None:
    """Whatever a client prepends, the client seen is the hop our trusted proxies recorded."""
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8")
    chain = ", ".join([*forged, client, *proxies])
    assert _resolve(("X-Forwarded-For", chain), trusted=trusted).client == (client, 0)
    forwarded = ", ".join(f'for="{hop}"' for hop in [*forged, client, *proxies])
    assert _resolve(("Forwarded", forwarded), trusted=trusted).client == (client, 0)


@given(st.text(max_size=200))
def test_any_header_value_never_raises(value: str) -> None:
    for name in ("Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port"):
        got = _resolve((name, value))
        assert got.scheme in ("http", "https")
        assert got.client is None or isinstance(got.client[1], int)


@pytest.mark.parametrize("port", ["²", "٣", "0", "65536", "00000080"])
def test_odd_port_digits_are_ignored(port: str) -> None:
    assert _resolve(("X-Forwarded-Host", "example.com"), ("X-Forwarded-Port", port)).server == (
        "example.com",
        80,
    )
    assert _resolve(("Forwarded", f'for="1.2.3.4:{port}"')).client == ("1.2.3.4", 0)


# ------------------------------------------------------------------ the hot path's shortcut

_NAMES = ["Forwarded", "x-forwarded-for", "X-FORWARDED-PROTO", "X-Forwarded-Host", "x-forwarded-port"]


@pytest.mark.parametrize("name", _NAMES)
def test_each_proxy_header_is_noticed_in_any_case(name: str) -> None:
    assert carries_proxy_headers(CIMultiDict([("Host", "a"), (name, "x")]))


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*_NAMES, "Host", "X-Forwarded", "X-Real-IP", "Forwarded-For"]),
            st.sampled_from(["1.2.3.4", "https", "for=1.2.3.4;proto=https", "h.example:81", "81"]),
        ),
        max_size=4,
    )
)
def test_skipping_resolve_without_proxy_headers_changes_nothing(pairs: list[tuple[str, str]]) -> None:
    headers = CIMultiDict(pairs)
    if not carries_proxy_headers(headers):  # the bridge's shortcut must be exactly "nothing to do"
        assert resolve(LOCAL, headers, TrustedProxies("*")) == LOCAL
    else:
        assert any(name in headers for name in _NAMES)
