"""The sans-IO core imports neither zmq, asyncio nor aiohttp (STYLE.md B1)."""

from __future__ import annotations

import subprocess
import sys


def test_wire_core_imports_no_io() -> None:
    code = (
        "import sys, wire, wire.codec, wire.states, wire.flow, wire.scope, wire.events; "
        "bad = [m for m in ('zmq', 'asyncio', 'aiohttp', 'frontend', 'appserver') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""


def test_frontend_and_appserver_never_import_each_other() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for package, other in (("frontend", "appserver"), ("appserver", "frontend")):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            assert f"import {other}" not in text and f"from {other}" not in text, path
