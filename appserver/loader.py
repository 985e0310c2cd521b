"""``"pkg.module:attr.sub"`` -> an ASGI 3 callable, or one clear line of error.

Every way the spec can be wrong is an ``AppLoadError`` whose message is one
line fit to show the operator (the worker exits with code 4, no traceback):
a malformed spec, a module that does not exist, a missing attribute, a
non-callable. An exception raised *while importing* the user's module (their
bug, not a typo in the spec) is reported with that exception's own message;
the original exception stays attached as ``__cause__``, and ``app_traceback`` gives the
app's part of its traceback (the frames in the user's files) for the log at any level.

The app's *interface* is then settled and the app wrapped, so the rest of
the server speaks ASGI 3 only:

* ``asgi3``: ``async (scope, receive, send)``, used as is;
* ``asgi2``: a class or callable taking only ``scope`` and returning an
  instance awaited with ``receive, send``; wrapped by ``ASGI2Adapter``;
* ``wsgi``: ``(environ, start_response)`` (Flask, Django's WSGIHandler),
  run in a thread pool by ``wsgi.WSGIAdapter`` (a2wsgi);
* ``auto``: uvicorn's rule (a class is ASGI 2 unless awaitable; a coroutine
  function, or an object whose ``__call__`` is one, is ASGI 3), extended by
  the signature where it is unambiguous: a plain callable that takes exactly
  two positional arguments is WSGI, exactly three is ASGI 3. What stays
  ambiguous (``*args``, no signature) falls back to uvicorn's answer, ASGI 2.

An explicit interface the app plainly cannot have (an async app as WSGI,
Flask as ASGI 3...) is an ``AppLoadError`` naming the one it looks like.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Interface(StrEnum):
    AUTO = "auto"
    ASGI3 = "asgi3"
    ASGI2 = "asgi2"
    WSGI = "wsgi"


class AppLoadError(Exception):
    """The app could not be loaded; ``str(exc)`` is one line for the operator."""


def load_app(
    spec: str,
    *,
    app_dir: str | None = None,
    factory: bool = False,
    interface: str = Interface.AUTO,
    wsgi_threads: int | None = None,  # None: wsgi.DEFAULT_THREADS
) -> ASGIApp:
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
    return _adapt(obj, spec, Interface(interface), wsgi_threads)


def detect_interface(app: Any) -> Interface:
    """The interface ``auto`` picks for ``app`` (see the module docstring)."""
    if inspect.isclass(app):
        return Interface.ASGI3 if hasattr(app, "__await__") else Interface.ASGI2
    if _is_async(app):
        return Interface.ASGI3
    takes = _positional_counts(app)
    if takes == {2}:
        return Interface.WSGI
    if takes == {3}:
        return Interface.ASGI3
    return Interface.ASGI2


def _adapt(app: Any, spec: str, interface: Interface, wsgi_threads: int | None = None) -> ASGIApp:
    if interface is Interface.AUTO:
        interface = detect_interface(app)
    else:
        _check_fits(app, spec, interface)
    if interface is Interface.ASGI2:
        return ASGI2Adapter(app)
    if interface is Interface.WSGI:
        from .wsgi import DEFAULT_THREADS, WSGIAdapter  # a2wsgi and its thread pool only for WSGI apps

        return WSGIAdapter(app, threads=wsgi_threads or DEFAULT_THREADS)
    return app  # type: ignore[no-any-return]


_CALLS = {
    Interface.ASGI3: (3, "(scope, receive, send)"),
    Interface.ASGI2: (1, "(scope)"),
    Interface.WSGI: (2, "(environ, start_response)"),
}


def _check_fits(app: Any, spec: str, interface: Interface) -> None:
    """Refuse an interface the app plainly cannot have; anything undecidable is let through."""
    if interface is Interface.WSGI and not inspect.isclass(app) and _is_async(app):
        raise AppLoadError(f"app {spec!r} is async, not a WSGI app; it looks like asgi3 (--interface asgi3)")
    takes = _positional_counts(app)
    wanted, call = _CALLS[interface]
    if takes is None or wanted in takes:
        return
    plural = "" if takes == {1} else "s"
    counts = " or ".join(str(n) for n in sorted(takes)) or "neither 1, 2 nor 3"
    message = (
        f"app {spec!r} does not fit --interface {interface.value}: "
        f"it takes {counts} positional argument{plural}, not {call}"
    )
    looks = detect_interface(app)
    if _CALLS[looks][0] in takes:
        message += f"; it looks like {looks.value} (--interface {looks.value})"
    raise AppLoadError(message)


def _positional_counts(app: Any) -> set[int] | None:
    """How many positional arguments (1 to 3) ``app`` accepts; None when its signature is unknown."""
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):  # builtins and C callables may have none
        return None
    counts = set()
    for n in (1, 2, 3):
        try:
            signature.bind(*range(n))
        except TypeError:
            continue
        counts.add(n)
    return counts


def _is_async(app: Any) -> bool:
    # Also sees through functools.partial; an object counts by its class's __call__.
    call = type(app).__call__
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)


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


# Frames from these are the machinery of the import, not the app's.
_NOT_THE_APP = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(importlib.__file__), "<frozen ")


def app_traceback(error: AppLoadError) -> str:
    """Where the app failed: the frames of its traceback outside importlib and zasgi, then the
    exception; "" when there is none (a syntax error names its file and line already)."""
    cause = error.__cause__
    if cause is None or isinstance(cause, SyntaxError):
        return ""
    frames = [
        frame for frame in traceback.extract_tb(cause.__traceback__)
        if not frame.filename.startswith(_NOT_THE_APP)
    ]  # fmt: skip
    if not frames:
        return ""
    return (
        "Traceback (the app's part):\n"
        + "".join(traceback.format_list(frames))
        + "".join(traceback.format_exception_only(type(cause), cause))
    )
