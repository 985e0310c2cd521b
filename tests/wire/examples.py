"""One example of every wire event, shared by the codec tests."""

from __future__ import annotations

import dataclasses

from wire import events as ev

_CONNECT = ev.WsConnect(
    0, "ws", "1.1", b"/chat", b"room=1", "", ((b"Host", b"x"),), ("127.0.0.1", 5000), None, ("v1", "v2"), {}
)

EXAMPLES: list[ev.Event] = [
    ev.Hello(0, 1, "host-1-ab", 42, 256, 10000, 262144, ("http", "trailers"), {"host": "h", "pid": 42}),
    ev.Welcome(0, "fe-1", 1000, 3, 262144, 64 * 1024 * 1024, ("http",)),
    ev.Refuse(0, "protocol 2 is not supported"),
    ev.Heartbeat(0),
    ev.Drain(0),
    ev.Linger(0),
    ev.Bye(0, "shutdown"),
    ev.UnknownPeer(0),
    ev.Limit(0, 300),
    ev.Pulse(0, b"host-1-ab/1", 1200, 0, "r7", "GET", "/slow"),
    ev.Evict(0, "loop blocked for 10.0s"),
    ev.Freed(0, (0, 3, 7)),
    ev.Share(0, {"path": "/dev/shm/zasgi-1-ab", "slots": 32, "slot_bytes": 65536}),
    ev.Request(
        7, "POST", "http", "1.1", b"/a%20b/%C3%A9", b"x=1&y=%20", "/root",
        ((b"Host", b"example"), (b"X-Dup", b"1"), (b"X-Dup", b"2")),
        ("10.0.0.1", 5555), ("127.0.0.1", 8000), b"first chunk", True, False, {"request_id": "r1"},
    ),  # fmt: skip
    ev.Body(7, b"more", False),
    ev.Disconnect(7),
    ev.Credit(7, 65536),
    ev.Response(7, 200, ((b"content-type", b"text/plain"), (b"set-cookie", b"a"), (b"set-cookie", b"b")), b"hi", True, True),
    ev.Trailers(7, ((b"x-checksum", b"abc"),), False),
    ev.Pathsend(7, "/srv/file.bin"),
    ev.Reset(7, ev.ResetCode.APP_ERROR, "boom"),
    ev.EarlyHints(7, (b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script")),
    dataclasses.replace(_CONNECT, stream_id=9),
    ev.WsAccept(9, "v1", ((b"x-extra", b"1"),)),
    ev.WsMessage(9, True, "héllo".encode()),
    ev.WsClose(9, 1001, "going away"),
    ev.WsHandoff(9, {"cursor": 5, "room": "a"}),
    ev.WsResume(11, _CONNECT, "v1", {"cursor": 5}),
]
