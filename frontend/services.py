"""What one HTTP listener's connections share, built once for ``server.py``.

The request path (``http_requests.HttpRequests``), the WebSocket bridge
(``ws_bridge.WsBridge``), the request heads' settings (``request_head``),
the metrics and the access log: each made here, once, and passed to what
calls it (no callbacks wired afterwards).
"""

from __future__ import annotations

import logging
import ssl

from .access_log import AccessLog
from .config import FrontendConfig
from .dispatch import Dispatcher
from .http_requests import HttpRequests
from .metrics import Metrics
from .refusal_log import RefusalReporter
from .request_head import RequestHeads
from .ws_bridge import WsBridge


class Services:
    __slots__ = ("requests", "websocket", "metrics", "access")

    def __init__(
        self,
        config: FrontendConfig,
        dispatcher: Dispatcher,
        *,
        ssl_context: ssl.SSLContext | None = None,
        frontend_id: str = "",
    ) -> None:
        heads = RequestHeads(config, ssl_context)
        websocket: WsBridge | None = None  # (the gauge below reads it once it exists)
        self.metrics = Metrics(dispatcher, websockets_open=lambda: websocket.open_count if websocket else 0)
        self.access = AccessLog(
            self.metrics.traffic, enabled=config.access_log, log_format=config.log_format, frontend=frontend_id
        )
        refusals = RefusalReporter(logging.getLogger("frontend.refusals"))  # HTTP's and WebSockets' 503s
        self.requests = HttpRequests(config, dispatcher, heads, self.metrics.traffic, refusals)
        self.websocket = websocket = WsBridge(config, dispatcher, heads, self.access, refusals)
