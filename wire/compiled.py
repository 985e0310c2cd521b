"""Which hot modules run compiled (mypyc), and ZASGI_PURE=1 to run them as pure Python.

``pip install .`` compiles ``HOT_MODULES`` with mypyc from these same .py
sources where a C compiler is present (setup.py reads the list from this
file, so it imports only the standard library). The .py files always stay
beside the extensions, so the pure-Python build is the same code.

Python prefers an extension module to a .py of the same name. With
``ZASGI_PURE=1`` in the environment, ``install_pure_hook`` (called by each
package's ``__init__``) puts a finder first on ``sys.meta_path`` that loads
the hot modules from their .py files instead: both builds are testable from
one install, and child processes inherit the choice.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

# The modules a request crosses most, compiled together (one mypyc group).
# Kept only while a benchmark shows each pays (tests/benchmarks/README.md).
# Not wire.events: its dataclasses compiled build slower from the interpreted
# modules that construct them (the __init__ dataclasses generates stays
# interpreted and sets each field through a type-checked descriptor). Compiled code
# checks declared types: a writer is typed by its Protocol (frontend/writer.py), so
# HTTP/1's and HTTP/2's both pass; tests build real objects, never object.__new__.
HOT_MODULES: tuple[str, ...] = (
    "wire.errors",
    "wire.event_classes",
    "wire.codec",
    "wire.channel",
    "wire.flow",
    "wire.states",
    "wire.scope",
    "frontend.codel",
    "frontend.pool",
    "frontend.slots",
    "frontend.http1",
    "frontend.parse_errors",
    "frontend.upload",
    "frontend.gate",
    "frontend.dispatch",
    "frontend.response",
    "frontend.request_head",
    "frontend.stream",
    "frontend.http_requests",
    "frontend.connection",
    "frontend.traffic",
    "frontend.access_log",
    "frontend.ws_frames",
    "frontend.ws_stream",
    "frontend.ws_session",
    "appserver.stream",
    "appserver.response",
    "appserver.cycle",
    "appserver.routing",
    "appserver.limiter",
    "appserver.admission",
    "appserver.connection",
    "appserver.websocket",
)

PURE_ENV = "ZASGI_PURE"


def pure_requested() -> bool:
    return os.environ.get(PURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds the hot modules' .py sources, ahead of the compiled extensions."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in HOT_MODULES or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for directory in path:
            source = os.path.join(directory, leaf + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def install_pure_hook() -> None:
    """With ZASGI_PURE=1, make the hot modules load as pure Python (idempotent)."""
    if pure_requested() and not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder())


def compiled_modules() -> list[str]:
    """The hot modules that load from a compiled extension here.

    Looked up beside this package (wire/, frontend/ and appserver/ are installed
    together), without importing them: the app server must not import frontend.
    """
    if pure_requested():
        return []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = []
    for name in HOT_MODULES:
        base = os.path.join(root, *name.split("."))
        if any(os.path.isfile(base + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            found.append(name)
    return found


def describe() -> str:
    """One line for ``zasgi --version``, the startup debug log and status."""
    compiled = compiled_modules()
    if len(compiled) == len(HOT_MODULES):
        return f"compiled (mypyc): {len(compiled)} hot modules"
    why = f"{PURE_ENV}=1" if pure_requested() else "not compiled at install"
    if not compiled:
        return f"pure Python ({why})"
    return f"partly compiled: {', '.join(compiled)}; the rest pure Python ({why})"
