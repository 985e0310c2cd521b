"""The request id on the app server's log lines, the app's own ``logging`` calls included.

The front end sends each request's id in REQUEST's ``ext`` map (it also
returns it to the client as ``x-request-id`` and writes it in its access
log). ``HttpCycle.run`` sets ``REQUEST_ID`` in the task that runs the app, so
every record logged from that task, or from tasks it starts (they copy the
context), is tagged; ``RequestIdFilter`` on the worker's log handlers copies
it onto the record as ``request_id`` (None outside a request) and
``request_tag`` (``"[ID] "`` or ``""``) for format strings. A record that
already carries ``request_id`` (``extra=``) is left alone: those are the
cycle's own lines, which show the id in their message already (they are
logged from the ZeroMQ reader callback too, outside the app's task).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("zasgi_request_id", default=None)
FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(request_tag)s%(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "request_id"):  # HttpCycle._log: "[ID] " is in the message
            record.request_tag = ""
            return True
        rid = record.request_id = REQUEST_ID.get()
        record.request_tag = f"[{rid}] " if rid else ""
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of ``logger`` (the root), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
