"""``"pkg.module:attr.sub"`` -> an ASGI 3 callable, or one clear line of error.

Every way the spec can be wrong is an ``AppLoadError`` whose message is one
line fit to show the operator (the worker exits with code 4, no traceback):
a malformed spec, a module that does not exist, a missing attribute, a
non-callable. An exception raised *while importing* the user's module (their
bug, not a typo in the spec) is reported with that exception's own message;
the original exception stays attached as ``__cause__`` for debug logging.

ASGI 2 apps (a class or callable taking only ``scope`` and returning an
instance awaited with ``receive, send``) are detected the way uvicorn does it
and wrapped, so the rest of the server speaks ASGI 3 only.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class AppLoadError(Exception):
    """The app could not be loaded; ``str(exc)`` is one line for the operator."""


def load_app(spec: str, *, app_dir: str | None = None, factory: bool = False) -> ASGIApp:
    """Import ``spec`` and return it as an ASGI 3 app.

    Raises:
        AppLoadError: for any reason the app cannot be had, with one line saying why.
    """
    module_name, attrs = _split(spec)
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    obj = _resolve(_import(module_name), module_name, attrs)
    if not callable(obj):
        raise AppLoadError(f"{spec!r} is not callable")
    if factory:
        obj = _call_factory(obj, spec)
    return ASGI2Adapter(obj) if _is_asgi2(obj) else obj


def _split(spec: str) -> tuple[str, str]:
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs or any(not part for part in attrs.split(".")):
        raise AppLoadError(f'app {spec!r} must look like "module:attribute"')
    return module_name, attrs


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "x itself is missing" gets the short message; a missing import
        # *inside* the user's module is their bug, reported as such.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"no module named {module_name!r}") from exc
        raise AppLoadError(f"error importing {module_name!r}: {_describe(exc)}") from exc
    except BaseException as exc:  # SystemExit, syntax errors... all are the user's module failing
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AppLoadError(f"error importing {module_name!r}: {_describe(exc)}") from exc


def _resolve(module: Any, module_name: str, attrs: str) -> Any:
    obj = module
    for part in attrs.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attrs!r}") from None
    return obj


def _call_factory(factory: Any, spec: str) -> Any:
    try:
        app = factory()
    except Exception as exc:
        raise AppLoadError(f"app factory {spec!r} failed: {_describe(exc)}") from exc
    if not callable(app):
        raise AppLoadError(f"app factory {spec!r} returned {type(app).__name__}, which is not callable")
    return app


def _is_asgi2(app: Any) -> bool:
    # uvicorn's rule: ASGI 3 apps are coroutine functions (or objects whose
    # __call__ is one); an awaitable class is ASGI 3 too.
    if inspect.isclass(app):
        return not hasattr(app, "__await__")
    if inspect.iscoroutinefunction(app):  # also sees through functools.partial
        return False
    if inspect.isfunction(app) or inspect.ismethod(app):
        return True
    return not inspect.iscoroutinefunction(type(app).__call__)


class ASGI2Adapter:
    """Runs an ASGI 2 app (``app(scope)`` returns ``instance(receive, send)``) as ASGI 3."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
