"""Flask app for tests/frameworks, served through ``--interface wsgi`` (a2wsgi).

``/forever`` streams until the client goes away and records in $PROBE_DIR
when its generator is closed, so a test can see the WSGI thread let go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request, stream_with_context

from tests.apps.fw_common import record

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return f"hello flask {request.args.get('name', 'world')}"


@app.get("/users/<int:user_id>")
def user(user_id: int) -> Response:
    return jsonify(user_id=user_id, thread=threading.current_thread().name, root=request.root_path)


@app.post("/form")
def form() -> Response:
    return jsonify(form=request.form.to_dict(), files=sorted(request.files))


@app.post("/json")
def json_body() -> Response:
    return jsonify(json=request.get_json(), length=request.content_length)


@app.get("/stream")
def stream() -> Response:
    def chunks() -> Iterator[str]:
        for i in range(5):
            yield f"chunk {i}\n"

    return Response(stream_with_context(chunks()), mimetype="text/plain")


@app.get("/forever")
def forever() -> Response:
    tag = request.args["tag"]

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                yield b"x" * 1024
                time.sleep(0.01)
        finally:
            record("closed", tag)

    return Response(chunks(), mimetype="application/octet-stream")


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("flask view failed")
