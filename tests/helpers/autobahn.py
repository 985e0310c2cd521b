"""Autobahn|Testsuite's fuzzing client (``wstest``), installed on demand into a cached Python 2.7 virtualenv.

autobahntestsuite is Python 2.7 code. This finds a Python 2.7 interpreter
(``python2.7`` on the PATH, else pyenv's versions), makes a Python 3 tool
environment holding virtualenv 20.21.1 (the last release that still creates
2.7 environments), and with it a 2.7 environment with the pins below, which
follow the upstream repository's requirements (autobahntestsuite 0.8.2 is the
release its Docker image used). Everything lives under ``cache_dir()``
(``ZASGI_AUTOBAHN_DIR``, default ``~/.cache/zasgi/autobahn``); a stamp file
records the pins, so a change of pins reinstalls and an unchanged cache costs
nothing. An flock keeps two test runs from installing at once.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

VIRTUALENV = "virtualenv==20.21.1"
PINS = (
    "autobahntestsuite==0.8.2",
    "autobahn[twisted]==0.10.9",
    "Twisted==19.10.0",
    "txaio==2.1.0",
    "pyOpenSSL==19.1.0",
    "cryptography==3.3.2",
    "zope.interface==4.6.0",
    "jinja2==2.11.3",
    "markupsafe==1.1.1",
    "Werkzeug==1.0.1",
    "klein==17.10.0",
    "service_identity==18.1.0",
    "incremental==16.10.1",
    "unittest2==1.1.0",
    "six==1.16.0",
)
INSTALL_TIMEOUT_S = 900.0


class AutobahnUnavailable(Exception):
    """No Python 2.7 interpreter here: the tests skip with this reason."""


def cache_dir() -> Path:
    return Path(os.environ.get("ZASGI_AUTOBAHN_DIR") or Path.home() / ".cache" / "zasgi" / "autobahn")


def find_python27() -> str:
    """A Python 2.7 interpreter that runs (a pyenv shim may exist without the version selected)."""
    candidates = [shutil.which("python2.7"), shutil.which("python2")]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/2.7*/bin/python2.7"), reverse=True)
    candidates += ["/usr/bin/python2.7", "/usr/local/bin/python2.7"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and _is_27(candidate):
            return candidate
    raise AutobahnUnavailable(
        "no working Python 2.7 interpreter (python2.7 on the PATH or under pyenv) for autobahntestsuite"
    )


def _is_27(python: str) -> bool:
    check = "import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)"
    try:
        return subprocess.run([python, "-c", check], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def wstest() -> Path:
    """The ``wstest`` script, installing the environment first if the cache lacks it.

    Raises:
        AutobahnUnavailable: no Python 2.7 interpreter.
        RuntimeError: an install step failed (its output included).
    """
    root = cache_dir()
    env, stamp = root / "py27", root / "py27" / "zasgi-pins.txt"
    script = env / "bin" / "wstest"
    wanted = "\n".join(PINS) + "\n"
    if script.exists() and stamp.exists() and stamp.read_text() == wanted:
        return script
    python27 = find_python27()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if script.exists() and stamp.exists() and stamp.read_text() == wanted:
            return script  # another run installed it meanwhile
        tool = root / "virtualenv-tool"
        if not (tool / "bin" / "virtualenv").exists():
            shutil.rmtree(tool, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(tool)])
            _run([str(tool / "bin" / "python"), "-m", "pip", "install", "--quiet", VIRTUALENV])
        shutil.rmtree(env, ignore_errors=True)
        _run([str(tool / "bin" / "virtualenv"), "--quiet", "--python", python27, str(env)])
        _run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--no-python-version-warning", *PINS])  # fmt: skip
        if not script.exists():
            raise RuntimeError(f"autobahntestsuite installed, but {script} is missing")
        stamp.write_text(wanted)
    return script


def _run(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")  # fmt: skip
