"""``zasgi status``: the workers each front end sees, read from its admin endpoint
(GET /workers, JSON; frontend/admin.py) over plain HTTP. With several front ends (``zasgi
run``'s shared admin port answers for all of them: frontend/fleet_admin.py; or given one
``--admin`` each, or found through ``zasgi run``'s ``--pid-file``: appserver/fleet.py keeps
their own admin URLs beside its workers' list), a last line puts them together."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any

import click

_STATUS_COLUMNS = (("WORKER", "id"), ("HOST", "host"), ("PID", "pid"), ("STATE", "state"),
                   ("IN-FLIGHT", "in_flight"), ("LIMIT", "limit"), ("CAPACITY", "capacity"),
                   ("WEBSOCKETS", "ws_in_flight"), ("UPTIME", "uptime_s"), ("SERVED", "served"))  # fmt: skip


def _fetch_status(url: str, timeout_s: float) -> dict[str, Any]:
    """``URL/workers`` as a dict. Raises ValueError with a one-line reason."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        with opener.open(url.rstrip("/") + "/workers", timeout=timeout_s) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ValueError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ValueError(str(getattr(exc.reason, "strerror", None) or exc.reason)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list):
        raise ValueError("not a zasgi admin endpoint (no worker list)")
    return data


def _fleet(url: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A shared admin endpoint's answer (frontend/fleet_admin.py) as each front end's own, named by
    its own admin URL; any other answer as it is."""
    fleet = data.get("fleet")
    if not isinstance(fleet, list):
        return [(url, data)]
    out = []
    for entry in fleet:
        if not isinstance(entry, dict):
            continue
        own = str(entry.get("admin") or url)
        if "error" in entry or not isinstance(entry.get("workers"), list):
            out.append((own, {"error": str(entry.get("error") or "no worker list")}))
        else:
            out.append((own, {k: v for k, v in entry.items() if k != "admin"}))
    return out


def _uptime(seconds: Any) -> str:
    s = int(seconds) if isinstance(seconds, int | float) else 0
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return f"{d}d{h:02d}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


def _status_table(workers: list[Any]) -> list[str]:
    cell = lambda w, key: _uptime(w.get(key)) if key == "uptime_s" else str(w.get(key, ""))  # noqa: E731
    rows = [[cell(w, key) for _, key in _STATUS_COLUMNS] for w in workers if isinstance(w, dict)]
    header = [title for title, _ in _STATUS_COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]  # fmt: skip


def _lingering(workers: list[Any]) -> str:
    """'2 lingering (15 sessions left), ' for the summary line; '' with none."""
    rows = [w for w in workers if isinstance(w, dict) and w.get("state") == "lingering"]
    if not rows:
        return ""
    left = sum(int(w.get(key) or 0) for w in rows for key in ("in_flight", "ws_in_flight"))
    return f"{len(rows)} lingering ({left} session{'' if left == 1 else 's'} left), "


@click.command("status")
@click.option("--admin", "admins", multiple=True, default=("http://127.0.0.1:9000",), show_default=True,
              envvar="ZASGI_ADMIN_URL", metavar="URL",
              help="A front end's admin endpoint (repeatable; env: space-separated).")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds to wait for each front end.")
@click.option("--json", "as_json", is_flag=True, help="Print the front ends' answers as JSON.")
@click.option("--pid-file", default=None, type=click.Path(dir_okay=False),
              help="`zasgi run`'s pid file: every one of its front ends (instead of --admin).")  # fmt: skip
def command(admins: tuple[str, ...], timeout: float, as_json: bool, pid_file: str | None) -> None:
    """The workers of each front end: id, host, pid, state, in-flight, limit, capacity, uptime, served."""
    if pid_file:
        admins = _fleet_admins(pid_file)
    answers: list[tuple[str, dict[str, Any]]] = []
    failed = False
    for admin in admins:
        url = admin if "://" in admin else f"http://{admin}"
        try:
            data = _fetch_status(url, timeout)
        except ValueError as exc:
            click.echo(f"zasgi status: cannot read {url}: {exc}", err=True)
            failed = True
            continue
        for fe_url, fe_data in _fleet(url, data):
            if "error" in fe_data:
                click.echo(f"zasgi status: cannot read {fe_url} (via {url}): {fe_data['error']}", err=True)
                failed = True
            elif all(fe_url != seen for seen, _ in answers):  # (--pid-file lists each one's own)
                answers.append((fe_url, fe_data))
    if as_json:
        click.echo(json.dumps([{"admin": url, **data} for url, data in answers], indent=2))
    for url, data in answers if not as_json else ():
        fe = data.get("frontend") if isinstance(data.get("frontend"), dict) else {}
        workers = data["workers"]
        ready = sum(1 for w in workers if isinstance(w, dict) and w.get("state") == "ready")
        queue = fe.get("queue", {}).get("http", 0) if isinstance(fe.get("queue"), dict) else 0
        plural = "" if len(workers) == 1 else "s"
        mode = f" ({fe['queue_mode']})" if fe.get("queue_mode", "normal") != "normal" else ""
        shed = fe.get("shed") if isinstance(fe.get("shed"), dict) else {}
        refused = sum(v for v in shed.values() if isinstance(v, int))
        lingering = _lingering(workers)
        busy = sum(1 for w in workers if isinstance(w, dict) and w.get("state") == "busy")
        lingering = (f"{busy} busy (event loop blocked), " if busy else "") + lingering
        click.echo(f"front end {fe.get('id', '?')} {fe.get('url', '')} (admin {url}): "
                   f"{len(workers)} worker{plural}, {ready} ready, {lingering}{queue} queued{mode}, "
                   f"{refused} refused")  # fmt: skip
        for line in _status_table(workers) if workers else ["(no workers)"]:
            click.echo("  " + line)
    if len(answers) > 1 and not as_json:
        click.echo(_together([data for _, data in answers]))
    sys.exit(1 if failed else 0)


def _together(answers: list[dict[str, Any]]) -> str:
    """One line for several front ends: how many, and which workers every one of them has READY."""
    ready = [{w.get("pid") for w in a["workers"] if isinstance(w, dict) and w.get("state") == "ready"}
             for a in answers]  # fmt: skip
    everywhere = set.intersection(*ready)
    seen = set.union(*ready)
    fes: list[dict[str, Any]] = [a["frontend"] for a in answers if isinstance(a.get("frontend"), dict)]
    queued = sum(int(fe["queue"].get("http", 0)) for fe in fes if isinstance(fe.get("queue"), dict))
    streams = sum(int(fe.get("streams_open") or 0) for fe in fes)
    joined = f"{len(everywhere)} of {len(seen)} ready worker(s) joined to every one"
    return f"{len(answers)} front ends: {joined}, {streams} open streams, {queued} queued"


def _fleet_admins(pid_file: str) -> tuple[str, ...]:
    """The admin URLs `zasgi run` (pid in ``pid_file``) lists for its front ends; one-line exit if none."""
    from ..control import PidFileError, running_pid

    try:
        pid = running_pid(pid_file)
    except PidFileError as exc:
        click.echo(f"zasgi status: {exc}", err=True)
        sys.exit(1)
    path = os.path.join(tempfile.gettempdir(), f"zasgi-{os.getuid()}", f"run-{pid}.frontends.admin")
    try:
        with open(path, encoding="utf-8") as f:
            urls = tuple(line.strip() for line in f if line.strip())
    except OSError as exc:
        click.echo(f"zasgi status: pid {pid} lists no front ends ({path}: {exc.strerror})", err=True)
        sys.exit(1)
    if not urls:
        click.echo(f"zasgi status: pid {pid}'s front ends have no admin endpoint (--no-admin?)", err=True)
        sys.exit(1)
    return urls
