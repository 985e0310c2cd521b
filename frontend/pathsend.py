"""File I/O for ``http.response.pathsend`` (PROTOCOL §11): the front end reads the file the app named.

Only a worker on this host that negotiated the feature may ask, and only for
an absolute path: the front end trusts it with its own file access. The file
is read 64 KiB at a time from local disk (sendfile is a later step); the
response writer (response.py) writes the pieces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .upload import CHUNK_BYTES

if TYPE_CHECKING:
    from .pool import WorkerRecord


def refused(worker: WorkerRecord | None, path: str) -> str | None:
    """Why this worker may not send this path; None when it may."""
    if worker is None or "pathsend" not in worker.features or not os.path.isabs(path):
        return "pathsend not allowed"
    return None


def chunks(path: str, empty: bool) -> Iterator[bytes]:
    """The file's bytes (none for a body-less response, though the file must open). Raises OSError."""
    with open(path, "rb") as f:
        while not empty and (chunk := f.read(CHUNK_BYTES)):
            yield chunk
