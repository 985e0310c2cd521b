"""Build: the hot modules compiled with mypyc from the same .py sources, pure Python as the fallback.

Everything else about the distribution is in pyproject.toml. The list of
compiled modules lives in wire/compiled.py (read here without importing the
package). ``ZASGI_PURE=1`` at install time builds no extension; a failed
compile (no C compiler, no Python headers, mypy missing or unhappy) warns
and installs pure Python, which is the same code.
"""

from __future__ import annotations

import os
import runpy
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
_compiled = runpy.run_path(os.path.join(HERE, "wire", "compiled.py"))


def _warn(message: str) -> None:
    print(f"zasgi build: {message}; installing pure Python", file=sys.stderr)
    _remove_stale_extensions()


def _remove_stale_extensions() -> None:
    """An earlier in-place (editable) build's extensions would shadow the .py files (or, for a
    module since taken off the list, load against a group library rebuilt without it): remove
    them. The packages have no C extensions of their own."""
    for folder in (os.path.join(HERE, package) for package in ("wire", "frontend", "appserver")):
        for entry in os.listdir(folder):
            if entry.endswith(".so"):
                os.remove(os.path.join(folder, entry))
    for entry in os.listdir(HERE):
        if "__mypyc." in entry and entry.endswith(".so"):
            os.remove(os.path.join(HERE, entry))


# pip runs this file once per build step; the metadata steps need no extensions (and mypyc
# takes a while: translate only when something is built).
_METADATA_ONLY = {"egg_info", "dist_info", "sdist"}


def _ext_modules() -> list:
    if _METADATA_ONLY.intersection(sys.argv[1:2]):
        return []
    _remove_stale_extensions()
    if _compiled["pure_requested"]():
        _warn(f"{_compiled['PURE_ENV']} is set")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc (mypy) is not available")
        return []
    # ZASGI_COMPILE="wire.codec,wire.events": compile only these (to measure what each pays).
    names = os.environ.get("ZASGI_COMPILE", "").split(",") if os.environ.get("ZASGI_COMPILE") else None
    paths = [name.replace(".", "/") + ".py" for name in names or _compiled["HOT_MODULES"]]
    try:
        # debug_level 0: no C debug info (smaller, faster to build); opt_level 3: gcc -O3.
        # follow-imports=silent: the other modules' types are used, their own errors are not ours
        # to fail a build on (tests/test_build.py holds the compiled ones to --strict).
        # no-site-packages: third-party types (aiohttp, msgpack...) are Any, as in pip's isolated
        # build env on a fresh machine; seeing them where installed made builds differ by machine.
        options = ["--follow-imports=silent", "--no-site-packages"]
        return mypycify([*options, *paths], opt_level="3", debug_level="0")
    except (Exception, SystemExit) as exc:  # mypy's type errors end in SystemExit
        _warn(f"mypyc could not translate the hot modules ({exc!r})")
        return []


class _OptionalBuildExt(build_ext):
    """Compiling is an optimisation: when it fails, drop every extension (a shim
    without its shared library would fail to import) and go on pure."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CCompilerError, DistutilsExecError, PlatformError, OSError...
            _warn(f"C compile failed ({exc})")
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)
            self.extensions = []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": _OptionalBuildExt})
