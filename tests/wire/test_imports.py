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
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for package, other in (("frontend", "appserver"), ("appserver", "frontend")):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module or ""]
                else:
                    continue
                assert not any(m == other or m.startswith(other + ".") for m in modules), path
