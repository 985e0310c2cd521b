"""The two builds of the hot modules (wire/compiled.py): compiled with mypyc, and pure Python.

``.ci/run`` installs the compiled build, runs the suite on it with
``ZASGI_EXPECT_COMPILED=1`` (so a build that silently fell back fails here),
then a subset again with ``ZASGI_PURE=1``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wire import compiled

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV} | env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=full)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


_FILES = "import importlib, wire; print(' '.join(importlib.import_module(m).__file__ for m in wire.compiled.HOT_MODULES))"


def test_mypy_is_clean_on_the_compiled_modules() -> None:
    # mypyc compiles what mypy accepts; strict, so the types it compiles from say what runs.
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]' installs it)")
    paths = [name.replace(".", "/") + ".py" for name in compiled.HOT_MODULES]
    mypy = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-site-packages", *paths, "wire/compiled.py"]
    # As the build checks them (setup.py: pyproject's config, imported modules' errors not shown).
    out = subprocess.run(mypy, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    # The compiled modules themselves strict, and with no code mypy believes unreachable (an
    # attribute's narrowing kept across an await or a call): mypyc may not run that as written.
    strict = [*mypy, "--strict", "--warn-unreachable"]
    out = subprocess.run(strict, cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in out.stdout.splitlines() if line.split(":")[0] in paths]
    assert not errors, "\n".join(errors)


def test_pure_env_loads_every_hot_module_from_its_source() -> None:
    files = _run(_FILES, ZASGI_PURE="1").split()
    assert len(files) == len(compiled.HOT_MODULES)
    assert all(f.endswith(".py") for f in files), files
    assert _run("import wire; print(wire.compiled.describe())", ZASGI_PURE="1") == "pure Python (ZASGI_PURE=1)"


def test_describe_tells_what_actually_loads() -> None:
    files = _run(_FILES).split()
    loaded = [m for m, f in zip(compiled.HOT_MODULES, files, strict=True) if not f.endswith(".py")]
    assert _run("import wire; print(wire.compiled.compiled_modules())") == repr(loaded)
    if os.environ.get("ZASGI_EXPECT_COMPILED") == "1":
        assert loaded == list(compiled.HOT_MODULES), "the compiled build fell back to pure Python"


def test_version_names_the_build() -> None:
    out = _run("from appserver.cli import main; main(['--version'])", ZASGI_PURE="1")
    assert out.endswith("(pure Python (ZASGI_PURE=1))"), out


def test_every_package_is_in_the_distribution() -> None:
    # A non-editable install ships only the packages pyproject lists (appserver.commands was once
    # missing: `pip install .` gave a zasgi that could not start, while editable installs worked).
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("wire", "frontend", "appserver")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed
