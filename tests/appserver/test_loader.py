"""load_app: every way an app string can be wrong gives one exact line."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appserver.loader import AppLoadError, ASGI2Adapter, load_app

GOOD_APP = """
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})

class Holder:
    class Inner:
        app = app
    not_callable = 42

def make_app():
    return app

def broken_factory():
    raise RuntimeError("no config")

class ASGI2App:
    def __init__(self, scope):
        self.scope = scope
    async def __call__(self, receive, send):
        await send({"type": "asgi2", "path": self.scope["path"]})
"""


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Write a uniquely named module into tmp_path; return its name. Forgotten afterwards."""
    names: list[str] = []

    def write(source: str) -> str:
        name = f"zasgi_test_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def load_error(spec: str, **kwargs: Any) -> str:
    with pytest.raises(AppLoadError) as info:
        load_app(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("spec", ["nocolon", ":app", "mod:", "mod:a..b", "mod:.a"])
def test_bad_format(spec: str) -> None:
    assert load_error(spec) == f'app {spec!r} must look like "module:attribute"'


def test_missing_module() -> None:
    assert load_error("zasgi_no_such_module:app") == "no module named 'zasgi_no_such_module'"


def test_missing_parent_package_is_also_the_module_missing() -> None:
    assert load_error("zasgi_no_such_pkg.sub:app") == "no module named 'zasgi_no_such_pkg.sub'"


def test_missing_import_inside_the_users_module_names_that_import(
    module: Callable[[str], str], tmp_path: Path
) -> None:
    name = module("import zasgi_dependency_that_is_missing\n")
    message = load_error(f"{name}:app", app_dir=str(tmp_path))
    assert message == (
        f"error importing {name!r}: ModuleNotFoundError: No module named 'zasgi_dependency_that_is_missing'"
    )


def test_import_error_inside_the_users_module_reports_its_message(
    module: Callable[[str], str], tmp_path: Path
) -> None:
    name = module("from os import no_such_name\n")
    message = load_error(f"{name}:app", app_dir=str(tmp_path))
    assert message.startswith(f"error importing {name!r}: ImportError: cannot import name 'no_such_name'")


def test_exception_at_import_is_one_line(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module("raise RuntimeError('bad\\nconfig')\n")
    assert (
        load_error(f"{name}:app", app_dir=str(tmp_path))
        == f"error importing {name!r}: RuntimeError: bad config"
    )


def test_missing_attribute(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module(GOOD_APP)
    assert load_error(f"{name}:nope", app_dir=str(tmp_path)) == f"module {name!r} has no attribute 'nope'"
    assert load_error(f"{name}:Holder.nope", app_dir=str(tmp_path)) == (
        f"module {name!r} has no attribute 'Holder.nope'"
    )


def test_not_callable(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module(GOOD_APP)
    assert load_error(f"{name}:Holder.not_callable", app_dir=str(tmp_path)) == (
        f"'{name}:Holder.not_callable' is not callable"
    )


def test_dotted_attribute(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module(GOOD_APP)
    app = load_app(f"{name}:Holder.Inner.app", app_dir=str(tmp_path))
    assert app is sys.modules[name].app


def test_factory(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module(GOOD_APP)
    assert load_app(f"{name}:make_app", app_dir=str(tmp_path), factory=True) is sys.modules[name].app


def test_factory_that_raises(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module(GOOD_APP)
    message = load_error(f"{name}:broken_factory", app_dir=str(tmp_path), factory=True)
    assert message == f"app factory '{name}:broken_factory' failed: RuntimeError: no config"


async def test_asgi2_class_is_wrapped(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module(GOOD_APP)
    app = load_app(f"{name}:ASGI2App", app_dir=str(tmp_path))
    assert isinstance(app, ASGI2Adapter)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "path": "/x"}, None, send)
    assert sent == [{"type": "asgi2", "path": "/x"}]


def test_asgi3_function_is_not_wrapped(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module(GOOD_APP)
    assert load_app(f"{name}:app", app_dir=str(tmp_path)) is sys.modules[name].app
