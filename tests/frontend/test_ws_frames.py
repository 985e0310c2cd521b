"""frontend/ws_frames.py: frames as an RFC 6455 client sends them; the server's as a client reads them."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frontend.ws_frames import (
    BINARY, CLOSE, PING, TEXT, Deflate, FrameError, FrameReader, FrameWriter, accept_key, negotiate_deflate,
)  # fmt: skip


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, m | n))
    elif n < 65536:
        head = bytes((b0, m | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, m | 127)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def client_deflate(payload: bytes, compressor: zlib._Compress | None = None) -> bytes:
    c = compressor or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def read_server_frame(data: bytes) -> tuple[int, int, bytes]:
    b0, n = data[0], data[1]
    assert not n & 0x80, "server frames are not masked"
    pos = 2
    if n == 126:
        n, pos = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        n, pos = int.from_bytes(data[2:10], "big"), 10
    assert len(data) == pos + n
    return b0 & 0xF0, b0 & 0x0F, data[pos:]


def test_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key("not base64!") is None
    assert accept_key("c2hvcnQ=") is None  # 5 bytes, not 16


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", "permessage-deflate"),
        ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate", "permessage-deflate"),
        ("x-webkit-deflate-frame, permessage-deflate; foo=1", None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("", None),
    ],
)
def test_deflate_negotiation_takes_the_first_offer_we_honour(offer: str, answer: str | None) -> None:
    agreed = negotiate_deflate(offer)
    assert (agreed.header if agreed else None) == answer


@given(st.lists(st.tuples(st.sampled_from([TEXT, BINARY]), st.text(max_size=300)), max_size=8),
       st.integers(1, 50))  # fmt: skip
def test_messages_come_out_whole_however_the_bytes_are_cut(messages: list[tuple[int, str]], cut: int) -> None:
    stream = b"".join(client_frame(op, text.encode()) for op, text in messages)
    reader = FrameReader(10_000)
    out = []
    for i in range(0, len(stream), cut):
        out += reader.feed(stream[i : i + cut])
    assert out == [(op, text.encode()) for op, text in messages]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 125, 126, 65535, 65536, 200_000]), min_size=1, max_size=4),
       st.integers(1000, 70_000))  # fmt: skip
def test_large_frames_cut_anywhere_come_out_whole(sizes: list[int], cut: int) -> None:
    """A frame whose length is known but whose bytes are still coming is joined once, when whole
    (``_more``): what follows it in the last chunk is the next frame's start."""
    messages = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    stream = b"".join(client_frame(BINARY, m) for m in messages)
    reader = FrameReader(1_000_000)
    out = []
    for i in range(0, len(stream), cut):
        out += reader.feed(stream[i : i + cut])
    assert out == [(BINARY, m) for m in messages]


def test_fragments_are_reassembled_with_control_frames_between() -> None:
    reader = FrameReader(1000)
    data = (
        client_frame(TEXT, b"he", fin=False) + client_frame(PING, b"p") + client_frame(0, b"ll", fin=False)
        + client_frame(0, b"o") + client_frame(BINARY, b"\xff" * 200) + client_frame(CLOSE, b"\x03\xe8bye")
    )  # fmt: skip
    expected = [(PING, b"p"), (TEXT, b"hello"), (BINARY, b"\xff" * 200), (CLOSE, (1000, "bye"))]
    assert reader.feed(data) == expected
    assert reader.feed(client_frame(CLOSE, b"")) == [(CLOSE, (1005, ""))]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(TEXT, b"x", mask=False), 1002),
        (client_frame(TEXT, b"x", rsv=0x40), 1002),  # no deflate agreed
        (client_frame(TEXT, b"x", rsv=0x20), 1002),
        (client_frame(3, b"x"), 1002),
        (client_frame(0, b"x"), 1002),
        (client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"), 1002),
        (client_frame(PING, b"x", fin=False), 1002),
        (client_frame(PING, b"x" * 126), 1002),
        (client_frame(CLOSE, b"\x03"), 1002),
        (client_frame(CLOSE, b"\x03\xee"), 1002),  # 1006 is reserved
        (client_frame(CLOSE, b"\x03\xe8\xff"), 1007),
        (client_frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"), 1007),
        (client_frame(TEXT, b"\xff", fin=False) + client_frame(0, b"ok"), 1007),
        (client_frame(BINARY, b"x" * 101), 1009),
        (client_frame(BINARY, b"x" * 60, fin=False) + client_frame(0, b"x" * 41), 1009),
    ],
)
def test_bad_frames_fail_with_their_close_code(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as info:
        FrameReader(100).feed(data)
    assert info.value.code == code


def test_an_oversize_frame_fails_from_its_header_alone() -> None:
    with pytest.raises(FrameError) as info:
        FrameReader(100).feed(client_frame(BINARY, b"x" * 70_000)[:14])
    assert info.value.code == 1009


def test_a_message_of_exactly_the_limit_passes() -> None:
    assert FrameReader(100).feed(client_frame(BINARY, b"x" * 100)) == [(BINARY, b"x" * 100)]


@pytest.mark.parametrize("takeover", [True, False])
def test_deflated_messages_inflate_with_and_without_context(takeover: bool) -> None:
    reader = FrameReader(100_000, Deflate(client_no_takeover=not takeover))
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15) if takeover else None
    texts = [b"hello hello hello", b"hello hello hello", "κόσμε".encode() * 50]
    data = b"".join(client_frame(TEXT, client_deflate(t, compressor), rsv=0x40) for t in texts)
    assert reader.feed(data) == [(TEXT, t) for t in texts]
    fragmented = client_deflate(b"abc" * 1000)
    data = client_frame(BINARY, fragmented[:5], fin=False, rsv=0x40) + client_frame(0, fragmented[5:])
    assert reader.feed(data) == [(BINARY, b"abc" * 1000)]


def test_a_deflate_bomb_fails_with_1009() -> None:
    reader = FrameReader(10_000, Deflate())
    with pytest.raises(FrameError) as info:
        reader.feed(client_frame(BINARY, client_deflate(b"\0" * 1_000_000), rsv=0x40))
    assert info.value.code == 1009


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frames_have_rfc_6455_lengths(size: int) -> None:
    assert read_server_frame(FrameWriter().frame(BINARY, b"y" * size)) == (0x80, BINARY, b"y" * size)


@pytest.mark.parametrize("no_takeover", [False, True])
def test_server_frames_deflate_so_a_client_inflates_them(no_takeover: bool) -> None:
    writer = FrameWriter(Deflate(server_bits=10, server_no_takeover=no_takeover))
    inflater = zlib.decompressobj(-10)
    for text in (b"abcabcabc" * 100, b"abcabcabc" * 100, b""):
        flags, opcode, payload = read_server_frame(writer.frame(TEXT, text))
        assert (flags, opcode) == (0xC0, TEXT)
        if no_takeover:
            inflater = zlib.decompressobj(-10)
        assert inflater.decompress(payload + b"\x00\x00\xff\xff") == text
    assert read_server_frame(writer.frame(PING, b"p")) == (0x80, PING, b"p")  # control frames never deflated


def test_close_frames_cut_the_reason_to_whole_characters() -> None:
    _, _, payload = read_server_frame(FrameWriter().close(1000, "é" * 100))
    assert payload[:2] == b"\x03\xe8" and payload[2:].decode() == "é" * 61
    assert FrameWriter().close(1005) == b"\x88\x00"
