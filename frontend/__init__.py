"""zasgi front end: HTTP/WebSocket termination, worker pool, dispatch."""
