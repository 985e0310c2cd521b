"""Shared by the framework apps: record what outlives a request in $PROBE_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def record(name: str, text: str) -> None:
    """Append a line to $PROBE_DIR/name (what tests poll with ``Server.wait_recorded``)."""
    directory = os.environ.get("PROBE_DIR")
    if directory:
        with open(Path(directory) / name, "a") as f:
            f.write(text + "\n")
