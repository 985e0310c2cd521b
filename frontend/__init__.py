"""zasgi front end: HTTP/WebSocket termination, worker pool, dispatch."""

import wire  # noqa: F401  (first: installs the ZASGI_PURE import hook before any hot module loads)
