"""``--reload``: watch the app's files (watchfiles) and ask the supervisor for a rolling restart.

The watcher is a daemon thread in the supervisor process running
``watchfiles.watch`` (inotify on Linux; it debounces bursts of writes, such
as an editor's save, into one batch). Each batch that passes the filter calls
``on_change`` once; the supervisor turns that into the same roll as SIGHUP
(new workers first, so no request is lost, and a new worker that cannot load
the app, e.g. a syntax error, stops the roll while the old ones serve on).

The filter follows uvicorn's ``--reload-include`` / ``--reload-exclude``:
shell globs matched against a file's name or its path (``*.py`` by default),
on top of watchfiles' defaults (``__pycache__``, ``.git``, editor swap files
ignored).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import watchfiles

log = logging.getLogger("zasgi.reload")

DEFAULT_INCLUDE = ("*.py",)
DEFAULT_EXCLUDE = (".*", "*.py[cod]", "*~", ".#*")  # uvicorn's default excludes


@dataclass(frozen=True)
class ReloadConfig:
    dirs: tuple[str, ...]  # absolute directories, watched recursively
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    @classmethod
    def build(cls, dirs: Sequence[str], include: Sequence[str], exclude: Sequence[str]) -> ReloadConfig:
        """Resolve and check the directories; ``ValueError`` names the one that is not a directory."""
        resolved = []
        for d in dirs:
            path = Path(d).resolve()
            if not path.is_dir():
                raise ValueError(f"--reload-dir {d}: not a directory")
            resolved.append(str(path))
        # An explicit --reload-include wins over a default exclude that would hide it (uvicorn does too).
        excl = tuple(p for p in DEFAULT_EXCLUDE if p not in include) + tuple(exclude)
        return cls(tuple(dict.fromkeys(resolved)), tuple(include) or DEFAULT_INCLUDE, excl)

    def describe(self) -> str:
        return f"{', '.join(self.dirs)} ({' '.join(self.include)})"

    def shown(self, paths: Sequence[str], limit: int = 3) -> str:
        """Changed files for a log line: relative to the watched directory, the first few."""

        def rel(path: str) -> str:
            for d in self.dirs:
                if path.startswith(d.rstrip(os.sep) + os.sep):
                    return os.path.relpath(path, d)
            return path

        return ", ".join(rel(p) for p in paths[:limit]) + (" ..." if len(paths) > limit else "")


class GlobFilter(watchfiles.DefaultFilter):
    """watchfiles' default ignores, then include/exclude globs on the name or the path."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        super().__init__()
        self.include, self.exclude = tuple(include), tuple(exclude)

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        return _matches(path, self.include) and not _matches(path, self.exclude)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    name, pure = os.path.basename(path), PurePath(path)
    return any(fnmatch.fnmatch(name, p) or pure.match(p) for p in patterns)


def no_bytecode_for_workers() -> None:
    """Workers started from now on write no .pyc files (they inherit the environment).

    Otherwise a .pyc written for a file that is then edited again within the same
    second, to the same size, passes Python's mtime+size check and the new worker
    would run the old code.
    """
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"


class Reloader:
    """A watcher thread: ``start()``, then ``on_change(paths)`` per debounced batch; ``stop()``."""

    def __init__(self, config: ReloadConfig, on_change: Callable[[list[str]], None]) -> None:
        self.config = config
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zasgi-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        watch_filter = GlobFilter(self.config.include, self.config.exclude)
        try:
            for changes in watchfiles.watch(
                *self.config.dirs,
                watch_filter=watch_filter,
                stop_event=self._stop,
                raise_interrupt=False,
                ignore_permission_denied=True,
            ):
                paths = sorted({path for _, path in changes})
                if paths and not self._stop.is_set():
                    self.on_change(paths)
        except Exception as exc:  # e.g. out of inotify watches: say so, the pool serves on
            log.error("file watcher stopped: %s; --reload is off", exc)
