"""``python -m tests.helpers.fd_frontend FD BACKEND [GRACE_S]``: a front end listening on an
inherited socket (fd FD), as ``zasgi run`` starts its front ends; the process contract of
``python -m frontend`` (ready line on stdout, SIGTERM shutdown, SIGUSR1 retire)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from frontend import config as cfg
from frontend.server import serve


def main() -> None:
    fd, backend = int(sys.argv[1]), sys.argv[2]
    grace = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    config = cfg.FrontendConfig(
        port=0, backend=cfg.Backend(endpoint=backend), shutdown_timeout_s=grace, access_log=False,
        heartbeat=cfg.Heartbeat(interval_ms=200, liveness=5),
    )  # fmt: skip

    def ready(line: str) -> None:
        print(line, flush=True)

    sock = socket.socket(fileno=fd)
    asyncio.run(serve(config, ready=ready, sock=sock))


if __name__ == "__main__":
    main()
