"""A mixed client load for chaos tests, run on the test's event loop (aiohttp client).

Every request and message is checked and accounted for in ``Tally``:
* keep-alive HTTP clients alternate GET /big (a pattern() body, compared byte
  for byte) and POST /digest (a random body; the app's sha256 must match);
  HTTP/2 clients (h2c, 4 streams at a time on one connection) do the same;
* streaming clients read 20 MiB responses (sha256 against pattern()) and slow
  chunked streams that span a drain (every chunk and the final line present);
* handoff WebSocket clients (/ws/handoff) check that the app's message counter
  continues without gap or repeat, whichever worker answers;
* plain WebSocket clients (/ws/echo) check every echo and reconnect after a
  close, recording its code;
* ``SseReader``: one Server-Sent Events stream (/sse), every event id in order.

Clients stop at ``stop``; every operation has a timeout, so nothing hangs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from tests.apps.probe import pattern

BIG = 20 * 1024 * 1024
BIG_SHA = hashlib.sha256(pattern(BIG)).hexdigest()
OP_TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclass
class Tally:
    http_ok: int = 0
    http_failed: list[str] = field(default_factory=list)
    streams_ok: int = 0
    streams_bad: list[str] = field(default_factory=list)  # truncated or corrupt bodies
    handoff_messages: int = 0
    handoff_worker_changes: int = 0  # a session continued on another worker
    handoff_failures: list[str] = field(default_factory=list)
    plain_messages: int = 0
    plain_closes: Counter[int] = field(default_factory=Counter)  # close code -> count
    plain_close_delays: list[float] = field(default_factory=list)  # seconds after the roll began
    plain_failures: list[str] = field(default_factory=list)
    roll_started: float | None = None  # set by the test before each SIGHUP

    def summary(self) -> str:
        return (
            f"HTTP: {self.http_ok} ok, {len(self.http_failed)} failed; "
            f"streams (20 MiB and slow): {self.streams_ok} ok, {len(self.streams_bad)} bad; "
            f"handoff WS: {self.handoff_messages} messages, {self.handoff_worker_changes} handoffs, "
            f"{len(self.handoff_failures)} failures; "
            f"plain WS: {self.plain_messages} messages, closes {dict(self.plain_closes)}, "
            f"{len(self.plain_failures)} failures"
        )


async def http_client(url: str, tally: Tally, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection per client
    async with aiohttp.ClientSession(connector=connector, timeout=OP_TIMEOUT) as session:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 2:
                    size = rng.randint(1, 64 * 1024)
                    async with session.get(f"{url}/big?size={size}") as r:
                        body = await r.read()
                        ok = r.status == 200 and body == pattern(size)
                        what = f"GET /big?size={size}: {r.status}, {len(body)} bytes"
                else:
                    body = os.urandom(rng.randint(1, 256 * 1024))
                    async with session.post(f"{url}/digest", data=body) as r:
                        answer = await r.json(content_type=None) if r.status == 200 else {}
                        ok = answer.get("sha256") == hashlib.sha256(body).hexdigest()
                        what = f"POST /digest {len(body)} bytes: {r.status} {answer}"
            except Exception as exc:  # any client-visible error counts
                ok, what = False, f"{type(exc).__name__}: {exc}"
            if ok:
                tally.http_ok += 1
            else:
                tally.http_failed.append(what)
            await asyncio.sleep(0.005)


async def h2_client(url: str, tally: Tally, stop: asyncio.Event, seed: int) -> None:
    """HTTP/2 with prior knowledge (h2c, httpx): the http_client's requests, 4 streams at a time on
    one connection; counted with the HTTP requests."""
    import httpx

    rng = random.Random(seed)

    async def one(client: httpx.AsyncClient, n: int) -> tuple[bool, str]:
        try:
            if n % 2:
                size = rng.randint(1, 64 * 1024)
                r = await client.get(f"{url}/big?size={size}")
                ok = r.http_version == "HTTP/2" and r.status_code == 200 and r.content == pattern(size)
                return ok, f"h2 GET /big?size={size}: {r.status_code} {r.http_version}, {len(r.content)} B"
            body = os.urandom(rng.randint(1, 256 * 1024))
            r = await client.post(f"{url}/digest", content=body)
            answer = r.json() if r.status_code == 200 else {}
            ok = answer.get("sha256") == hashlib.sha256(body).hexdigest()
            return ok, f"h2 POST /digest {len(body)} bytes: {r.status_code} {answer}"
        except Exception as exc:  # any client-visible error counts
            return False, f"h2 {type(exc).__name__}: {exc}"

    async with httpx.AsyncClient(http1=False, http2=True, timeout=60) as client:
        n = 0
        while not stop.is_set():
            results = await asyncio.gather(*(one(client, n + i) for i in range(4)))
            n += 4
            for ok, what in results:
                if ok:
                    tally.http_ok += 1
                else:
                    tally.http_failed.append(what)
            await asyncio.sleep(0.005)


async def streaming_client(url: str, tally: Tally, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(timeout=OP_TIMEOUT) as session:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if n % 3:
                    h, size = hashlib.sha256(), 0
                    async with session.get(f"{url}/big?size={BIG}") as r:
                        async for chunk in r.content.iter_chunked(256 * 1024):
                            h.update(chunk)
                            size += len(chunk)
                    ok = r.status == 200 and h.hexdigest() == BIG_SHA
                    what = f"20 MiB stream: status {r.status}, {size} bytes"
                else:
                    async with session.get(f"{url}/stream?n=30&delay=0.05") as r:
                        text = await r.text()
                    expected = "".join(f"chunk {i}\n" for i in range(30)) + "end\n"
                    ok, what = r.status == 200 and text == expected, f"slow stream: {r.status} {text[-40:]!r}"
            except Exception as exc:
                ok, what = False, f"{type(exc).__name__}: {exc}"
            if ok:
                tally.streams_ok += 1
            else:
                tally.streams_bad.append(what)
            await asyncio.sleep(0.1)


async def handoff_client(url: str, tally: Tally, stop: asyncio.Event, name: str) -> None:
    """One session for the whole test: it must never see a close."""
    async with aiohttp.ClientSession(timeout=OP_TIMEOUT) as session:
        try:
            async with session.ws_connect(f"{url}/ws/handoff", heartbeat=None) as ws:
                sent, pid = 0, None
                while not stop.is_set():
                    text = f"{name}-{sent}"
                    await ws.send_str(text)
                    sent += 1
                    msg = await ws.receive(timeout=60)
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        tally.handoff_failures.append(f"{name}: {msg.type.name} {ws.close_code} after {sent - 1}")
                        return
                    count, worker, echoed = msg.data.split(":", 2)
                    if echoed != text or int(count) != sent:
                        tally.handoff_failures.append(f"{name}: sent #{sent} {text!r}, got {msg.data!r}")
                        return
                    if pid is not None and worker != pid:
                        tally.handoff_worker_changes += 1
                    pid = worker
                    tally.handoff_messages += 1
                    await asyncio.sleep(0.02)
        except Exception as exc:
            tally.handoff_failures.append(f"{name}: {type(exc).__name__}: {exc}")


async def plain_client(url: str, tally: Tally, stop: asyncio.Event, name: str) -> None:
    """Echo until closed; record the close code; reconnect (as a real client would)."""
    async with aiohttp.ClientSession(timeout=OP_TIMEOUT) as session:
        while not stop.is_set():
            try:
                async with session.ws_connect(f"{url}/ws/echo", heartbeat=None) as ws:
                    sent = 0
                    while not stop.is_set():
                        text = f"{name}-{sent}"
                        try:
                            await ws.send_str(text)
                        except ConnectionResetError:
                            pass  # the server's close crossed our send: read the close frame below
                        sent += 1
                        msg = await ws.receive(timeout=60)
                        if msg.type is aiohttp.WSMsgType.TEXT and msg.data == text:
                            tally.plain_messages += 1
                            await asyncio.sleep(0.02)
                            continue
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                            # The frame's own code: a send that crossed the close leaves ws.close_code at 1006.
                            code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else (ws.close_code or 0)
                            tally.plain_closes[code] += 1
                            if tally.roll_started is not None:
                                tally.plain_close_delays.append(time.monotonic() - tally.roll_started)
                            if code != 1012:
                                tally.plain_failures.append(f"{name}: closed with {code}")
                        else:
                            tally.plain_failures.append(f"{name}: unexpected {msg.type.name} {msg.data!r}")
                        break
            except Exception as exc:
                tally.plain_failures.append(f"{name}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)


def start_load(
    url: str, tally: Tally, stop: asyncio.Event, *, http: int = 50, streaming: int = 10, handoff: int = 10,
    plain: int = 10, h2: int = 0,
) -> list[asyncio.Task[None]]:
    tasks = [http_client(url, tally, stop, seed=i) for i in range(http)]
    tasks += [h2_client(url, tally, stop, seed=1000 + i) for i in range(h2)]
    tasks += [streaming_client(url, tally, stop) for _ in range(streaming)]
    tasks += [handoff_client(url, tally, stop, f"h{i}") for i in range(handoff)]
    tasks += [plain_client(url, tally, stop, f"p{i}") for i in range(plain)]
    return [asyncio.ensure_future(t) for t in tasks]


async def stop_load(tasks: list[asyncio.Task[None]], stop: asyncio.Event, timeout_s: float = 90.0) -> None:
    """Let every client finish its current operation (bounded), then cancel any straggler."""
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if pending:
        raise AssertionError(f"{len(pending)} load clients did not finish in {timeout_s}s")


@dataclass
class SseReader:
    """One /sse client: ``n`` events, each id in order, then the end event."""

    n: int
    delay_s: float
    ids: list[int] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    ended: bool = False
    errors: list[str] = field(default_factory=list)

    async def run(self, session: aiohttp.ClientSession, url: str, started: asyncio.Event) -> None:
        try:
            async with session.get(f"{url}/sse?n={self.n}&delay={self.delay_s}") as response:
                started.set()
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while b"\n\n" in buffer:
                        event, buffer = buffer.split(b"\n\n", 1)
                        self._event(event.decode())
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            started.set()

    def _event(self, text: str) -> None:
        fields = dict(line.split(": ", 1) for line in text.splitlines())
        if fields.get("event") == "end":
            self.ended = True
            return
        i, pid = (int(v) for v in fields["data"].split())
        if i != len(self.ids):
            self.errors.append(f"event {i} after {len(self.ids)} events")
        self.ids.append(i)
        self.pids.add(pid)

    @property
    def whole(self) -> bool:
        return self.ended and self.ids == list(range(self.n)) and not self.errors
