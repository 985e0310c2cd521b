"""The HTTP request path: a parsed request -> a worker slot -> a wire stream -> its answer.

Read top to bottom, one request goes:

1. ``start`` (called by ``connection.Connection`` for each request in turn,
   with its writer, ``response.ResponseWriter``): the REQUEST head (``request_head``),
   the body (``upload``), a worker slot, and the stream sent, synchronously.
2. The common case (body whole) needs no task: the stream calls
   ``first_event`` from the dispatcher's callback with the worker's first
   event, and a whole response is written from there (``ResponseWriter.whole``).
   With no slot free, the request waits in the queue as a future with a
   callback (``_queue``, ``_slotted``), then goes on as if one had been, or
   gets its 503 there.
3. Anything else (a body still arriving, a streamed response, a failure or
   replay) gets one task (``_serve``): ``_answer`` replays what may be
   replayed and hands the response to ``ResponseWriter.respond``.
4. ``_release``: the stream ends; ``ResponseWriter.finish`` tells the
   connection, which logs the request and starts the next one.

What the client sees when things go wrong (PROTOCOL §9), before the status
line: 503 + Retry-After (no worker in time), 502 + ``connection: close``
(worker lost, worker broke the protocol, replay impossible), 500 (the worker
reset the stream), 413/400 (the body); after it, response.py aborts the
connection. A client that goes away is not an error: its task is cancelled
(or, without a task, its stream: ``lost``), the worker gets DISCONNECT.

A second protocol (HTTP/2) drives the same path with its own writer
(``h2_exchange.H2Exchange``): the writer is the request's sink
(``whole``/``respond``/``error``/``finish``) and carries the request
(``message``: method, path, version, headers; ``payload``); what both provide
is ``writer.RequestWriter``.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any

from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.streams import EMPTY_PAYLOAD

from wire import events as ev
from wire.events import ResetCode

from .access_log import request_id
from .config import FrontendConfig
from .dispatch import Dispatcher
from .refusal_log import RefusalReporter
from .request_head import RequestHeads
from .responses import describe_failure
from .slots import NoCapacity
from .stream import HttpStream, Local
from .traffic import Traffic
from .upload import BodyTooLarge, new_upload
from .writer import RequestWriter

if TYPE_CHECKING:
    from .pool import WorkerRecord

log = logging.getLogger(__name__)

_FAILURE_STATUS = {
    Local.WORKER_LOST: 502,
    Local.WORKER_BLOCKED: 504,  # its worker was evicted, blocked past --timeout-worker-blocked
    Local.VIOLATION: 502,
    Local.BODY_TOO_LARGE: 413,
    Local.BAD_BODY: 400,
}


class HttpRequests:
    def __init__(
        self,
        config: FrontendConfig,
        dispatcher: Dispatcher,
        heads: RequestHeads,
        metrics: Traffic,
        refusals: RefusalReporter,
    ) -> None:
        self.dispatcher = dispatcher
        self.metrics = metrics
        self._heads = heads
        self._tls = heads.has_tls
        self._max_body = config.http.max_body_bytes
        self._retry_after_s = config.queue.timeout_s
        self._refusals = refusals
        self._active = 0  # HTTP requests in flight; shutdown closes WebSockets once it is 0
        self._idle: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ 1. start

    def start(self, w: RequestWriter) -> None:
        """A request's turn on its connection: dispatch it now, answer it later."""
        message = w.message
        w.rid = request_id(message.headers)
        if message.version < HttpVersion11 and _bad_framing(message):  # (HTTP/2's (2, 0): framed by h2)
            w.error(400)
            w.finish()
            return
        try:
            stream = self._new_stream(w)
        except BodyTooLarge:
            w.error(413)
            w.finish()
            return
        self._active += 1
        worker = self.dispatcher.slots.try_acquire()
        if worker is None:
            self._queue(w, stream)
            return
        self.metrics.dispatched_at_once()
        self._dispatch(w, stream, worker)

    def _dispatch(self, w: RequestWriter, stream: HttpStream, worker: WorkerRecord) -> None:
        w.worker = worker
        if stream.upload.needs_pump:  # the body is still arriving: a task reads it
            stream.dispatch(worker, False)
            self._spawn(w, stream, self._answer(w, stream))
            return
        stream.dispatch(worker, True)  # 2. no task: the worker's first event comes to first_event
        w.pending = stream

    def _new_stream(self, w: RequestWriter) -> HttpStream:
        message = w.message
        content = w.payload
        headers = message.headers
        if self._max_body is not None:
            length = headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > self._max_body:
                raise BodyTooLarge(f"Content-Length {length} over {self._max_body}")
        expect = (
            content is not EMPTY_PAYLOAD  # (most requests: nothing more to ask)
            and message.version >= HttpVersion11  # (HTTP/2 too: h2_exchange writes the 100)
            and not content.is_eof()
            and headers.get("Expect", "").lower() == "100-continue"
        )
        upload = new_upload(content, expect_continue=expect, max_body_bytes=self._max_body)
        conn = w.conn
        client, server = conn.addresses
        head, proxied = self._heads.build(
            message.method, message.path, message.version, headers, message.raw_headers, client, server
        )
        if proxied is not None:
            w.client, w.client_set = proxied[0], True
        if self._tls:
            if conn.tls is None:  # the same for every request of a connection
                conn.tls = self._heads.tls_of(conn.transport)
            ext = self._heads.ext(w.rid, conn.tls)
        else:
            ext = {"request_id": w.rid}
        return HttpStream(self, head, ext, upload, w)

    # ------------------------------------------------------------ 2. without a task

    def first_event(self, stream: HttpStream, item: Any) -> None:
        """The worker's first event for a request dispatched without a task (dispatcher's callback)."""
        w = stream.writer
        assert w is not None  # (a finished stream takes no first event)
        w.pending = None
        try:
            if type(item) is ev.Response and w.whole(stream, item):
                if not w.conn.paused:
                    self._release(stream)
                    w.finish()  # the connection starts its next request from here
                    return
                work: Any = w.drain()  # a slow reader: wait before the next request
            else:  # streamed, a failure, a replay...: a task takes over from this event
                stream.queue(item)
                work = self._answer(w, stream)
        except Exception:  # a bug of ours must not reach the dispatcher's callback
            log.exception("stream %d: request failed", stream.stream_id)
            stream.fail()
            w.abort()
            self._release(stream)
            return
        self._spawn(w, stream, work)

    def lost(self, stream: HttpStream) -> None:
        """The client went away while a task-less request waited for the worker."""
        log.debug("client went away from stream %d", stream.stream_id)
        stream.fail()
        self._release(stream)

    # ------------------------------------------------------------ 2b. queued, without a task

    def _queue(self, w: RequestWriter, stream: HttpStream) -> None:
        """No slot is free: wait in the queue for one (or a 503). A queue under overload holds
        a thousand of these: a future each, no task (a task apiece cost the front end about a
        fifth of its CPU under cpu-overload, taken from the workers on the same cores)."""
        slots = self.dispatcher.slots
        try:
            waiter = slots.enqueue()
        except NoCapacity as exc:  # refused at once: a full queue, no worker, shutting down
            self.metrics.queue_waited(0.0)
            self._refuse(w, stream, exc)
            return
        w.pending = waiter
        waiter.add_done_callback(partial(self._slotted, w, stream, perf_counter()))

    def _slotted(self, w: RequestWriter, stream: HttpStream, queued_at: float,
                 waiter: asyncio.Future[WorkerRecord]) -> None:  # fmt: skip
        """The queue's answer: a slot (dispatch as if it had been free), a 503, or the client left."""
        if waiter.cancelled() or w.done:  # the client left (ResponseWriter.lost cancelled the waiter)
            self.dispatcher.slots.left(waiter)
            log.debug("client went away from a queued request")
            w.pending = None
            stream.fail()
            self._release(stream)
            return
        self.metrics.queue_waited(perf_counter() - queued_at)
        exc = waiter.exception()
        if exc is not None:
            self._refuse(w, stream, exc)
            return
        try:
            self._dispatch(w, stream, waiter.result())
        except Exception:  # a bug of ours must not reach the loop's callback
            log.exception("stream %d: request failed", stream.stream_id)
            w.pending = None
            stream.fail()
            w.abort()
            self._release(stream)

    def _refuse(self, w: RequestWriter, stream: HttpStream, exc: BaseException) -> None:
        w.pending = None
        if self._refusals.refused(exc.reason if isinstance(exc, NoCapacity) else "error"):
            log.info("no worker for %s %s: %s (%s)", w.message.method, w.message.path, exc, self._refusals.note)
        w.error(503, retry_after_s=self._retry_after_s, keep_alive=True)
        self._release(stream)
        w.finish()

    # ------------------------------------------------------------ 3. with a task

    def _spawn(self, w: RequestWriter, stream: HttpStream, work: Any) -> None:
        """The request's task, doing ``work`` (a coroutine) and then ending stream and request."""
        task = asyncio.get_running_loop().create_task(self._serve(w, stream, work))
        w.pending = task
        task.add_done_callback(lambda done: self._unstarted(done, w, stream, work))

    def _unstarted(self, task: asyncio.Task[None], w: RequestWriter, stream: HttpStream, work: Any) -> None:
        """A task cancelled (its client gone) before its first step never ran ``_serve``'s
        ``finally``: end the stream here, or its slot would stay taken."""
        if w.pending is task:
            w.pending = None
            work.close()
            stream.fail()
            self._release(stream)

    async def _serve(self, w: RequestWriter, stream: HttpStream, work: Any) -> None:
        """A request's task: ``work`` (``_answer``, ``drain``), then the stream and request end."""
        try:
            await work
        except asyncio.CancelledError:
            log.debug("client went away from stream %d", stream.stream_id)
            stream.fail()
            raise
        except Exception:  # a bug of ours: the connection must still end cleanly
            log.exception("stream %d: request failed", stream.stream_id)
            stream.fail()
            w.abort()
        finally:
            w.pending = None
            self._release(stream)
        w.finish()

    async def _answer(self, w: RequestWriter, stream: HttpStream) -> None:
        """From dispatch to the end of the response: replays, failures, the general path."""
        if stream.upload.needs_pump:
            stream.start_pump(w.write_continue)
        while True:
            w.worker = stream.worker  # for the access log (a replay moves it)
            item = await stream.next()
            if type(item) is ev.Response:
                if not w.whole(stream, item):
                    await w.respond(stream, item)
                elif w.conn.paused:  # a slow reader: wait before the next request
                    await w.drain()
                return
            if not stream.can_replay(item):
                _failure(w, stream, item)
                return
            log.info("replaying stream %d on another worker (%s)", stream.stream_id, describe_failure(item))
            try:
                stream.replay(await self.dispatcher.acquire(replay=True))
            except NoCapacity:
                w.error(503, retry_after_s=self._retry_after_s, keep_alive=True)
                return

    # ------------------------------------------------------------ 4. the end

    def _release(self, stream: HttpStream) -> None:
        stream.finish()  # (which also unbinds the stream from its body: no reference cycle)
        self._active -= 1
        if not self._active and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def wait_idle(self, timeout_s: float) -> None:
        """Until no HTTP request is in flight, or ``timeout_s`` (shutdown: then WebSockets close)."""
        if self._active:
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._idle), timeout_s)
            except TimeoutError:
                log.warning("%d HTTP requests still in flight after %.1fs", self._active, timeout_s)
            finally:
                self._idle = None


def _failure(w: RequestWriter, stream: HttpStream, item: Any) -> None:
    """The stream failed before the response: our own status instead."""
    stream.fail()
    if type(item) is ev.Reset:
        log.warning("stream %d reset by the worker before the response: %s",
                    stream.stream_id, describe_failure(item))  # fmt: skip
        w.error(502 if item.code == ResetCode.REFUSED else 500)
        return
    log.warning("stream %d failed before the response: %s", stream.stream_id, item.value)
    w.error(_FAILURE_STATUS[item])


def _bad_framing(message: Any) -> bool:
    """HTTP/0.9, or HTTP/1.0 with Transfer-Encoding (RFC 9112 §6.1: its framing is faulty)."""
    return message.version != HttpVersion10 or "Transfer-Encoding" in message.headers
