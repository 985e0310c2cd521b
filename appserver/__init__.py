"""zasgi app server: ASGI host, worker process, pool supervisor, CLI."""

import wire  # noqa: F401  (first: installs the ZASGI_PURE import hook before any hot module loads)
