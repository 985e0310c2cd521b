"""What a user meets at the edges of `zasgi run` (issue 21): the fields added to responses,
--env-file, --log-format json on every stream, --log-config, and an import error's location."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import REPO, Proc, zasgi

from .conftest import READY_RUN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ENV_APP = "tests.apps.envecho:app"


def _run(tmp_path: Path, *args: str, app: str = ENV_APP, name: str = "run") -> tuple[Proc, str]:
    proc = Proc(name, zasgi("run", app, "--port", "0", "--admin-port", "0", *args), tmp_path)
    try:
        url = proc.wait_for(READY_RUN, 60).group(1)
    except BaseException:
        proc.kill_tree()
        raise
    return proc, url


def test_response_fields_default_and_configured(tmp_path: Path) -> None:
    proc, url = _run(tmp_path)
    try:
        resp = httpx.get(url + "/NOTHING", timeout=30)
        assert resp.headers["server"] == "zasgi"  # no Python, aiohttp or versions
        assert "content-type" not in resp.headers  # the app sent none: none is made up
        assert "date" in resp.headers
    finally:
        proc.kill_tree()
    proc, url = _run(
        tmp_path,
        "--no-server-header",
        "--no-date-header",
        "--header",
        "X-Frame-Options: DENY",
        "--header",
        "X-Two:2",
        name="run2",
    )
    try:
        resp = httpx.get(url + "/NOTHING", timeout=30)
        assert "server" not in resp.headers and "date" not in resp.headers
        assert resp.headers["x-frame-options"] == "DENY" and resp.headers["x-two"] == "2"
    finally:
        proc.kill_tree()


def test_bad_header_option_is_one_line(tmp_path: Path) -> None:
    proc = Proc("run", zasgi("run", ENV_APP, "--port", "0", "--header", "no colon"), tmp_path)
    assert proc.wait_exit(60) != 0
    assert "--header 'no colon' must look like NAME:VALUE" in proc.log() and "Traceback" not in proc.log()


def test_env_file_reaches_the_app_and_set_variables_win(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text('GREETING="hello from .env"\nZASGI_EDGE_SET=from-file\n')
    proc = Proc(
        "run",
        zasgi("run", ENV_APP, "--port", "0", "--admin-port", "0", "--env-file", str(env_file)),
        tmp_path,
        env={"ZASGI_EDGE_SET": "from-env"},
    )
    try:
        url = proc.wait_for(READY_RUN, 60).group(1)
        assert httpx.get(url + "/GREETING", timeout=30).text == "hello from .env"
        assert httpx.get(url + "/ZASGI_EDGE_SET", timeout=30).text == "from-env"
    finally:
        proc.kill_tree()
    missing = Proc("missing", zasgi("run", ENV_APP, "--env-file", str(tmp_path / "nope.env")), tmp_path)
    assert missing.wait_exit(60) == 2 and "nope.env" in missing.log()


def test_json_logs_on_every_stream(tmp_path: Path) -> None:
    proc = Proc(
        "run", zasgi("run", ENV_APP, "--port", "0", "--admin-port", "0", "--log-format", "json"), tmp_path
    )
    try:
        first = proc.wait_for(r'"message":"zasgi running on (http://[^ ]+) ', 60)
        assert httpx.get(first.group(1) + "/X", timeout=30).status_code == 200
        proc.wait_for(r'"GET /X HTTP/1.1"|"path":"/X"', 30)  # the access line
    finally:
        proc.kill_tree()
    lines = [line for line in proc.log().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\n{proc.log()}") from None
    loggers = {str(r.get("logger", "")).split(".")[0] for r in records}
    assert {"zasgi", "frontend", "appserver"} <= loggers, loggers  # supervisor, front end, workers
    assert not any("zasgi-ready" in json.dumps(r) for r in records)  # the internal line: not shown


def test_json_log_of_an_import_error_has_the_traceback_as_a_field(tmp_path: Path) -> None:
    app_dir = _bad_app(tmp_path)
    proc = Proc(
        "run",
        zasgi(
            "run",
            "badmod:app",
            "--app-dir",
            str(app_dir),
            "--port",
            "0",
            "--admin-port",
            "0",
            "--log-format",
            "json",
        ),
        tmp_path,
    )
    assert proc.wait_exit(60) == 4
    (record,) = [json.loads(line) for line in proc.log().splitlines() if "cannot load app" in line]
    assert (
        record["message"] == "cannot load app: error importing 'badmod': ZeroDivisionError: division by zero"
    )
    assert 'badmod.py", line 4, in boom' in record["exc"]


def test_import_error_shows_where_at_the_default_level(tmp_path: Path) -> None:
    app_dir = _bad_app(tmp_path)
    proc = Proc(
        "run",
        zasgi("run", "badmod:app", "--app-dir", str(app_dir), "--port", "0", "--admin-port", "0"),
        tmp_path,
    )
    assert proc.wait_exit(60) == 4
    log = proc.log()
    assert re.search(r'File ".*badmod\.py", line 6, in <module>\n +boom\(\)', log), log
    assert re.search(r'File ".*badmod\.py", line 4, in boom\n +return 1 / 0', log), log
    assert "importlib" not in log  # only the app's part


def test_log_config_file_takes_every_process(tmp_path: Path) -> None:
    out = tmp_path / "all.log"
    config = tmp_path / "logging.json"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "%(name)s|%(message)s"}},
                "handlers": {
                    "file": {"class": "logging.FileHandler", "filename": str(out), "formatter": "plain"}
                },
                "root": {"level": "INFO", "handlers": ["file"]},
            }
        )
    )
    proc = Proc(
        "run",
        zasgi("run", ENV_APP, "--port", "0", "--admin-port", "0", "--log-config", str(config)),
        tmp_path,
    )
    try:
        url = proc.wait_for(READY_RUN, 60).group(1)
        assert httpx.get(url + "/X", timeout=30).status_code == 200
    finally:
        proc.kill_tree()
    text = out.read_text()
    assert re.search(r"^frontend\.server\|listening on", text, re.M), text
    assert re.search(r"^appserver\.worker\|worker .* ready", text, re.M), text
    assert re.search(r"^zasgi\.access\|.*GET /X", text, re.M), text


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [("bad.json", "{", "Expecting property name"), ("bad.ini", "[loggers]\nkeys=root\n", "formatters")],
)
def test_bad_log_config_is_one_line_naming_the_file(
    tmp_path: Path, name: str, text: str, needle: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    proc = Proc("run", zasgi("run", ENV_APP, "--log-config", str(path)), tmp_path)
    assert proc.wait_exit(60) == 2
    log = proc.log().strip()
    assert f"--log-config {path}" in log and needle in log and "Traceback" not in log, log


def test_reload_waits_for_the_outcome_and_fails_with_its_reason(tmp_path: Path) -> None:
    """`zasgi reload` used to exit 0 when the reload failed; now it waits and says why."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "relapp.py"
    module.write_text((REPO / "tests" / "apps" / "envecho.py").read_text())
    good = module.read_text()
    pid_file = tmp_path / "zasgi.pid"
    proc, url = _run(tmp_path, "--app-dir", str(app_dir), "--pid-file", str(pid_file), app="relapp:app")
    try:
        module.write_text(good + "\n1 / 0\n")  # the new code cannot be imported
        done = subprocess.run(
            zasgi("reload", "--pid-file", str(pid_file)),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert done.stderr.startswith(
            f"zasgi reload: reload failed (pid {proc.pid}): new worker exited with code 4"
        )
        assert "the old workers keep serving" in done.stderr
        assert httpx.get(url + "/X", timeout=30).status_code == 200  # and they do
        module.write_text(good)
        done = subprocess.run(
            zasgi("reload", "--pid-file", str(pid_file)),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert done.returncode == 0 and "reload complete" in done.stdout, (done.stdout, done.stderr)
        done = subprocess.run(
            zasgi("reload", "--no-wait", "--pid-file", str(pid_file)),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert done.returncode == 0 and f"SIGHUP sent to pid {proc.pid}" in done.stdout
    finally:
        proc.kill_tree()


def test_wsgi_threads_bound_the_requests_a_worker_runs(tmp_path: Path) -> None:
    proc, url = _run(tmp_path, "--interface", "wsgi", "--wsgi-threads", "3", app="tests.apps.wsgi_busy:app")
    try:
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: httpx.get(url + "/", timeout=60).status_code, range(8)))
        assert codes == [200] * 8
        assert httpx.get(url + "/max", timeout=30).text == "3"
    finally:
        proc.kill_tree()


def test_a_worker_over_max_worker_rss_is_replaced_losing_no_request(tmp_path: Path) -> None:
    proc, url = _run(tmp_path, "--max-worker-rss", "150", app="tests.apps.memhog:app")
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                codes.append(client.get(url + "/").status_code)

    try:
        first = httpx.get(url + "/", timeout=30).text
        loader = threading.Thread(target=load)
        loader.start()
        try:
            assert httpx.get(url + "/grow", timeout=60).text == first  # now ~240 MiB resident
            proc.wait_for(
                rf"worker 0 \(pid {first}\) uses \d+ MiB, over --max-worker-rss 150 MiB; "
                r"starting its replacement \(1 replaced for memory so far\)",
                60,
            )
            proc.wait_for(rf"worker 0 \(pid \d+\) ready \(max-worker-rss\); pid {first} drains", 60)
            deadline = time.monotonic() + 30
            while httpx.get(url + "/", timeout=30).text == first and time.monotonic() < deadline:
                time.sleep(0.1)
            assert httpx.get(url + "/", timeout=30).text != first
        finally:
            stop.set()
            loader.join(60)
        assert codes and set(codes) == {200}, codes  # nothing lost during the replacement
    finally:
        proc.kill_tree()


def _bad_app(tmp_path: Path) -> Path:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "badmod.py").write_text(
        textwrap.dedent("""\
        x = 1

        def boom():
            return 1 / 0

        boom()
        app = None
    """)
    )
    return app_dir


def test_websocket_handshakes_follow_the_same_field_policy(tmp_path: Path) -> None:
    from websockets.sync.client import connect

    def handshake(url: str) -> Any:
        with connect(url.replace("http://", "ws://") + "/ws/echo", open_timeout=30) as ws:
            ws.send("hi")
            assert ws.recv(timeout=30) == "hi"
            return ws.response.headers

    proc, url = _run(tmp_path, app="tests.apps.probe:app")
    try:
        headers = handshake(url)
        assert headers["Server"] == "zasgi" and "Date" in headers  # not Python/aiohttp versions
    finally:
        proc.kill_tree()
    proc, url = _run(tmp_path, "--no-server-header", "--no-date-header", "--header", "X-Frame-Options: DENY",
                     app="tests.apps.probe:app", name="run2")  # fmt: skip
    try:
        headers = handshake(url)
        assert "Server" not in headers and "Date" not in headers and headers["X-Frame-Options"] == "DENY"
    finally:
        proc.kill_tree()


def test_under_reload_a_broken_import_shows_where(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "relapp.py"
    good = (REPO / "tests" / "apps" / "envecho.py").read_text()
    module.write_text(good)
    proc, url = _run(tmp_path, "--app-dir", str(app_dir), "--reload", app="relapp:app")
    try:
        lines = good.count("\n")
        broken = good + "\n\ndef boom():\n    return {}['missing']\n\n\nboom()\n"
        # The watcher may not be subscribed yet right after the banner (a loaded machine): change the
        # file again until the reload is seen, bounded (12 x 5 s).
        for attempt in range(12):
            module.write_text(broken + f"# change {attempt}\n")
            try:
                proc.wait_for(r"reload failed: new worker exited with code 4", 5)
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("no reload seen in 60 s:\n" + proc.log())
        log = proc.log()
        assert re.search(rf'File ".*relapp\.py", line {lines + 7}, in <module>\n +boom\(\)', log), log
        assert re.search(rf'File ".*relapp\.py", line {lines + 4}, in boom', log), log
        assert "KeyError: 'missing'" in log
        assert httpx.get(url + "/X", timeout=30).status_code == 200  # the old workers serve on
    finally:
        proc.kill_tree()
