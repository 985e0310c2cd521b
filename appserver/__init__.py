"""zasgi app server: ASGI host, worker process, pool supervisor, CLI."""
