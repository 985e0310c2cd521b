#!/usr/bin/env python3
"""zasgi against uvicorn (and nginx -> uvicorn) on this machine: every case of issue 8, interleaved.

Run from the repository root::

    python tests/benchmarks/bench.py                    # every case, 3 rounds of 5 s
    python tests/benchmarks/bench.py --quick            # one tiny run of each case (seconds)
    python tests/benchmarks/bench.py --cases hello,ws --rounds 5 --duration 10

Cases (the app is tests/benchmarks/bench_app.py under every server):

    hello     wrk -t1 at c1, c64 and c256, GET / -> "Hello, world!": req/s, p50/p99, CPU µs/request
              (c1: one request at a time, its rate is one over the latency of a request at rest)
              (with a reference row "aiohttp bare": aiohttp's low-level server answering by itself)
    hello-log hello at c64 with every server's default access log on (to its log file): what a user
              comparing defaults sees; zasgi w1 against uvicorn w2
    fastapi   wrk -t1 -c64 on a FastAPI endpoint (path + query parameter, ~1 KiB pydantic JSON,
              fastapi_app.py): zasgi w1 and w2 against uvicorn w2
    download  one connection fetching a 10 MiB chunked response over and over (wrk -c1): MiB/s
    upload    one connection posting 50 MiB bodies over and over (wrk -c1, a Lua body): MiB/s
    ws        WebSocket echo, 100 connections, one message in flight each (a raw-socket client): msg/s
    ws-10k    10,000 idle WebSockets (bench_ws.py's client, on a fresh server of its own), then 3 rounds
              of one echo on each, spread over 3 s: connections opened, echoes answered of sent, echo
              p50/p99, RSS growth per connection (zasgi: the front end alone; others: every process),
              CPU µs per connection; zasgi w1 against uvicorn w2 and w1 (--quick: 200 connections,
              1 echo round)
    h2        HTTP/2 with prior knowledge (h2c), h2load -c16 -m32 (16 connections, 32 streams in flight
              each), GET / -> "Hello, world!": req/s, p50/p99 (from h2load's per-request log), against
              hypercorn (the pure-Python HTTP/2 anchor; uvicorn has no HTTP/2) with as many workers,
              and granian w1 (Rust) when it installs
    scaleout  an app that awaits 5 ms per request, wrk -c256, zasgi workers 1/2/4/8 at --capacity 8
              (plus workers 1 at the default capacity): req/s until the front end is the limit
    wire      the ZeroMQ hop alone (bench_wire.py): REQUEST -> RESPONSE round trips/s and CPU, 64 in flight

Overload cases (issue 17), each on a freshly started server, zasgi against uvicorn with as many workers:

    io-burst      an app awaiting 50 ms (/io), wrk -t2 -c3000, -w2: goodput (2xx/s), non-2xx, p99
    cpu-overload  2 ms of CPU per request (/cpu), 1,000 connections (loadgen.py closed), -w2:
                  goodput, non-2xx, p99 of the 2xx ("admitted") and of the rest
    c10k          10,000 keep-alive connections each sending one GET / at once (loadgen.py burst),
                  -w1: how many got 200, and how long the last one took
    slow-upload   600 connections trickling a POST body at 1 byte/s, then 50 GETs (5 s timeout
                  each, loadgen.py slow-upload), -w1: GETs timed out

Each round starts every server once, runs every selected case against it, stops it, then the next
server: servers alternate within a round, so machine noise hits all of them alike. The table has
medians with min-max over rounds, CPU time per request (or per MiB, per message) summed over every
process of the server from /proc (for zasgi split as front end / app servers), and the ratios to
the anchors (uvicorn --workers 2, uvicorn 1 worker, nginx -> uvicorn). It installs what it needs:
wrk and nginx from apt (when root; nginx is skipped if that fails), uvicorn[standard] and psutil
from pip.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APP = "bench_app:app"
CASES = (
    "hello",
    "hello-log",
    "fastapi",
    "download",
    "upload",
    "ws",
    "ws-10k",
    "h2",
    "scaleout",
    "wire",
    "io-burst",
    "cpu-overload",
    "c10k",
    "slow-upload",
)
OVERLOAD = {"io-burst": 2, "cpu-overload": 2, "c10k": 1, "slow-upload": 1}  # case -> workers
WS10K = "ws-10k"  # like the overload cases, on a fresh server of its own; a table of its own
WS10K_SERVERS = {"zasgi@base w1", "zasgi w1", "uvicorn w1", "uvicorn w2"}
MIB = 1 << 20
QUIET = ("--log-level", "warning", "--no-access-log")  # zasgi's and uvicorn's: no access log, no info


# ------------------------------------------------------------------ tools


def apt_install(*packages: str) -> bool:
    if os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    if subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], **quiet
    ).returncode:
        subprocess.run(["apt-get", "update", "-qq"], **quiet)
        return (
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], **quiet
            ).returncode
            == 0
        )
    return True


def ensure_tools(want_nginx: bool, want_h2: bool = False) -> bool:
    """wrk (required), uvicorn + psutil + fastapi (pip), nginx, h2load + hypercorn (optional); returns
    whether nginx is there."""
    if shutil.which("wrk") is None and not apt_install("wrk"):
        sys.exit("wrk is missing and could not be installed (need root for apt-get install wrk)")
    try:
        import fastapi  # noqa: F401
        import psutil  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "uvicorn[standard]", "psutil", "fastapi"], check=True
        )
    if want_h2 and shutil.which("h2load") is None and not apt_install("nghttp2-client"):
        print("h2load not installable (Debian nghttp2-client): the h2 case is left out", file=sys.stderr)
    for module in ("hypercorn", "granian") if want_h2 else ():  # granian: a row only if it installs
        if not _importable(module):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", module], check=False)
    if want_nginx and nginx_path() is None and not apt_install("nginx-light") and not apt_install("nginx"):
        print("nginx not installable: the nginx -> uvicorn rows are left out", file=sys.stderr)
    return nginx_path() is not None


def nginx_path() -> str | None:
    return shutil.which("nginx") or (shutil.which("nginx", path="/usr/sbin:/usr/local/sbin") or None)


def raise_fd_limit() -> None:
    """Every server and client this starts inherits it: the overload cases open 10,000 sockets."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 20_000:
        print(f"RLIMIT_NOFILE is {hard}: the c10k case needs ~20,000 (ulimit -Hn)", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ servers


@dataclass
class Server:
    name: str
    cases: set[str]
    start: Callable[[int, Path], list[subprocess.Popen[bytes]]]
    # results[(case, variant)] = one dict per round
    results: dict[tuple[str, str], list[dict[str, float]]] = field(default_factory=dict)


def spawn(
    argv: list[str], log: Path, cwd: Path = REPO, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "ab")
    env = {
        **os.environ,
        **(extra_env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(HERE), str(cwd)])),
    }
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    out.close()
    return proc


def zasgi(
    workers: int,
    capacity: int | None = None,
    tree: Path = REPO,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    access_log: bool = False,
) -> Callable[[int, Path], list[subprocess.Popen[bytes]]]:
    """``tree``: the checkout whose code runs (``--baseline``: an older tree, same bench app);
    ``extra``: more ``zasgi run`` options; ``env``: more environment (``ZASGI_PURE``);
    ``access_log``: its default logging (access log on, level info) instead of none."""

    def start(port: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
        argv = [
            sys.executable,
            "-m",
            "appserver.cli",
            "run",
            APP,
            "--app-dir",
            str(HERE),
            "--port",
            str(port),
            "--workers",
            str(workers),
            *(() if access_log else QUIET),
        ]
        if capacity:
            argv += ["--capacity", str(capacity)]
        argv += extra
        tag = "".join(extra) + "".join(f"-{k}" for k in env or {}) + ("-log" if access_log else "")
        name = f"zasgi-w{workers}-c{capacity}-{tree.name}{tag}.log"
        return [spawn(argv, log_dir / name, cwd=tree, extra_env=env)]

    return start


def uvicorn_argv(port: int, workers: int, access_log: bool = False) -> list[str]:
    """``access_log``: uvicorn's default logging (access log on, level info) instead of none."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        APP,
        "--app-dir",
        str(HERE),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        *(() if access_log else QUIET),
    ]


def uvicorn(workers: int, access_log: bool = False) -> Callable[[int, Path], list[subprocess.Popen[bytes]]]:
    def start(port: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
        name = f"uvicorn-w{workers}{'-log' if access_log else ''}.log"
        return [spawn(uvicorn_argv(port, workers, access_log), log_dir / name)]

    return start


def hypercorn(workers: int) -> Callable[[int, Path], list[subprocess.Popen[bytes]]]:
    """hypercorn (HTTP/1.1 and HTTP/2; h2c with prior knowledge on cleartext), uvloop workers."""

    def start(port: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
        argv = [sys.executable, "-m", "hypercorn", APP, "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--worker-class", "uvloop", "--log-level", "warning"]  # fmt: skip
        return [spawn(argv, log_dir / f"hypercorn-w{workers}.log")]

    return start


def granian(workers: int) -> Callable[[int, Path], list[subprocess.Popen[bytes]]]:
    """granian (Rust HTTP/1.1 and HTTP/2, h2c with prior knowledge), ASGI, uvloop: the compiled anchor."""

    def start(port: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
        argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "auto",
                "--log-level", "warning", "--no-access-log", APP]  # fmt: skip
        return [spawn(argv, log_dir / f"granian-w{workers}.log")]

    return start


NGINX_CONF = """
{user}
worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


def nginx_uvicorn(port: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    """The classic split: nginx (defaults + upstream keep-alive) in front of uvicorn, 1 worker."""
    upstream = free_port()
    conf_dir = Path(tempfile.mkdtemp(prefix="nginx-", dir=log_dir))
    user = "user root;" if os.geteuid() == 0 else ""
    (conf_dir / "nginx.conf").write_text(
        NGINX_CONF.format(user=user, dir=conf_dir, upstream=upstream, port=port)
    )
    app = spawn(uvicorn_argv(upstream, 1), log_dir / "nginx-uvicorn.log")
    proxy = spawn(
        [nginx_path() or "nginx", "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf")],
        log_dir / "nginx.log",
    )
    return [app, proxy]


def aiohttp_bare(port: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    return [spawn([sys.executable, str(HERE / "aiohttp_bare.py"), str(port)], log_dir / "aiohttp-bare.log")]


def protocol_bare(port: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    return [spawn([sys.executable, str(HERE / "protocol_bare.py"), str(port)], log_dir / "protocol-bare.log")]


def servers(selected: set[str], have_nginx: bool, quick: bool, baseline: Path | None = None) -> list[Server]:
    main = {"hello", "download", "upload", "ws"}
    w1 = {c for c, w in OVERLOAD.items() if w == 1}
    w2 = {c for c, w in OVERLOAD.items() if w == 2}
    out = [
        *([Server("zasgi@base w1", main | w1, zasgi(1, tree=baseline))] if baseline is not None else []),
        *([Server("zasgi@base w2", w2, zasgi(2, tree=baseline))] if baseline is not None else []),
        *([Server("zasgi@base w1 log", {"hello-log"}, zasgi(1, tree=baseline, access_log=True))]
          if baseline is not None else []),  # fmt: skip
        Server("zasgi w1", main | {"scaleout", "h2", "fastapi"} | w1, zasgi(1)),
        Server("zasgi w1 log", {"hello-log"}, zasgi(1, access_log=True)),
        # What response bodies through shared memory (wire/shm.py, the default) are worth: frames only.
        Server("zasgi w1 no-shm", {"download"}, zasgi(1, extra=("--no-shm-bodies",))),
        Server("zasgi w2", {"hello", "download", "h2", "fastapi", "ws"} | w2, zasgi(2)),
        # What compiling the hot modules (wire/compiled.py) is worth: the same code as pure Python.
        Server("zasgi w1 pure", main, zasgi(1, env={"ZASGI_PURE": "1"})),
        # One front end for two workers (the default, --frontends auto, gives two here): what the
        # second core of HTTP is worth.
        Server("zasgi w2 fe1", {"hello", "download", "fastapi", "ws", "io-burst", "cpu-overload"},
               zasgi(2, extra=("--frontends", "1"))),
        # What SCHED_BATCH (the default, appserver/sched.py) is worth: the same under the default policy.
        Server("zasgi w1 sched-other", {"hello"}, zasgi(1, extra=("--no-sched-batch",))),
        Server("uvicorn w1", main | w1, uvicorn(1)),
        Server("uvicorn w2", main | {"scaleout", "fastapi"} | w2, uvicorn(2)),
        Server("uvicorn w2 log", {"hello-log"}, uvicorn(2, access_log=True)),
        Server("hypercorn w1", {"h2"}, hypercorn(1)),
        Server("hypercorn w2", {"h2"}, hypercorn(2)),
        *([Server("granian w1", {"h2"}, granian(1))] if _importable("granian") else []),
        Server("aiohttp bare", {"hello"}, aiohttp_bare),  # the floor of an aiohttp web-layer front end
        Server("protocol bare", {"hello"}, protocol_bare),  # the floor of a protocol-level front end
    ]
    if have_nginx:
        out.append(Server("nginx>uvicorn", {"hello", "download", "upload"}, nginx_uvicorn))
    for w in (1, 2) if quick else (1, 2, 4, 8):
        out.append(Server(f"zasgi w{w} cap8", {"scaleout"}, zasgi(w, 8)))
    for s in out:
        if s.name in WS10K_SERVERS:
            s.cases.add(WS10K)
    return [s for s in out if s.cases & selected]


def _importable(module: str) -> bool:
    import importlib
    import importlib.util

    importlib.invalidate_caches()  # (it may have been pip-installed a moment ago)
    return importlib.util.find_spec(module) is not None


def wait_ready(port: int, procs: list[subprocess.Popen[bytes]], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"server exited with {p.returncode} (see its log)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not come up")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# ------------------------------------------------------------------ CPU from /proc


def cpu_by_role(procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds (user + system) of every process of the server, by role: fe (zasgi's front
    end), wk (app servers / uvicorn workers / nginx), sup (supervisors, resource trackers)."""
    import psutil

    roles = {"fe": 0.0, "wk": 0.0, "sup": 0.0}
    for root in procs:
        try:
            tree = [psutil.Process(root.pid), *psutil.Process(root.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            try:
                cmd, t = " ".join(p.cmdline()), p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            if "-m frontend" in cmd:
                role = "fe"
            elif "resource_tracker" in cmd or (p.pid == root.pid and len(tree) > 1 and "nginx" not in cmd):
                role = "sup"
            else:
                role = "wk"
            roles[role] += t.user + t.system
    return roles


# ------------------------------------------------------------------ load generators

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(
    url: str, conns: int, duration_s: float, script: Path | None = None, threads: int = 1
) -> dict[str, float]:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration_s:g}s", "--latency", "--timeout", "30s"]
    if script:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    seconds = (
        float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)] if done else 1.0
    )
    requests = float(done.group(1)) if done else 0.0
    return {
        "requests": requests,
        "seconds": seconds,
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": (float(non2xx.group(1)) if non2xx else 0.0) + (sum(map(int, sock.groups())) if sock else 0),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def h2load(url: str, conns: int, streams: int, duration_s: float, log_dir: Path) -> dict[str, float]:
    """h2load over h2c (prior knowledge) for ``duration_s``; p50/p99 from its per-request log."""
    log = log_dir / f"h2load-{time.monotonic_ns()}.tsv"
    argv = ["h2load", "-t1", f"-c{conns}", f"-m{streams}", "-D", f"{duration_s:g}", "--log-file", str(log)]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60).stdout
    done = re.search(r"requests: .* (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    took = re.search(r"finished in ([\d.]+)(ms|s),", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    elapsed_ms = []
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[2].isdigit():
                elapsed_ms.append(int(parts[2]) / 1000)
        log.unlink()
    elapsed_ms.sort()

    def pct(p: float) -> float:
        return elapsed_ms[min(len(elapsed_ms) - 1, int(len(elapsed_ms) * p))] if elapsed_ms else float("nan")

    ok = float(codes.group(1)) if codes else 0.0
    failed = sum(float(g) for g in done.groups()[2:]) if done else 1.0
    return {
        "requests": ok,
        "seconds": float(took.group(1)) / (1000 if took.group(2) == "ms" else 1) if took else duration_s,
        "p50": pct(0.5),
        "p99": pct(0.99),
        "errors": failed + (sum(float(g) for g in codes.groups()[1:]) if codes else 0.0),
        "non2xx": sum(float(g) for g in codes.groups()[1:]) if codes else 0.0,
    }


def loadgen(*args: object, timeout_s: float = 300) -> dict[str, object]:
    """tests/benchmarks/loadgen.py's JSON answer."""
    import json

    out = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if out.returncode:
        raise RuntimeError(f"loadgen.py {args} failed: {out.stderr[-800:]}")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def overload_case(case: str, port: int, plan: Plan) -> dict[str, float]:
    """One overload case against a fresh server: goodput (2xx/s) as the rate, p99 of every answer,
    p99 of the 2xx alone where the client tells them apart, non-2xx and their share."""
    base = f"http://127.0.0.1:{port}"
    if case == "io-burst":
        r = wrk(f"{base}/io", plan.io_conns, plan.overload_s, threads=2)
        good = r["requests"] - r["non2xx"]
        return {"requests": good, "seconds": r["seconds"], "p50": r["p50"], "p99": r["p99"],
                "p99_ok": float("nan"), "errors": r["errors"], "non2xx": r["non2xx"],
                "non2xx_pct": 100 * r["non2xx"] / max(r["requests"], 1)}  # fmt: skip
    if case == "cpu-overload":
        g = loadgen("closed", port, "/cpu", plan.cpu_conns, plan.overload_s)
        ok, every = g["ok"], g["all"]  # type: ignore[index]
        return {"requests": g["goodput"] * g["seconds"], "seconds": g["seconds"],  # type: ignore[operator]
                "p50": every["p50_ms"], "p99": every["p99_ms"], "p99_ok": ok["p99_ms"],
                "errors": g["non2xx"], "non2xx": g["non2xx"],
                "non2xx_pct": 100 * g["non2xx"] / max(g["responses"], 1)}  # type: ignore[operator] # fmt: skip
    if case == "c10k":
        g = loadgen("burst", port, "/", plan.c10k_conns)
        every = g["all"]  # type: ignore[index]
        unanswered_or_bad = plan.c10k_conns - g["ok"]  # type: ignore[operator]
        return {"requests": g["ok"], "seconds": 1.0, "p50": every["p50_ms"], "p99": every["p99_ms"],
                "p99_ok": every["max_ms"], "errors": unanswered_or_bad, "non2xx": unanswered_or_bad,
                "non2xx_pct": 100 * unanswered_or_bad / plan.c10k_conns}  # type: ignore[operator] # fmt: skip
    if case == "slow-upload":
        g = loadgen("slow-upload", port, plan.slow_conns, plan.slow_gets)
        get = g["get"]  # type: ignore[index]
        return {"requests": plan.slow_gets - g["timeouts"], "seconds": 1.0,  # type: ignore[operator]
                "p50": get["p50_ms"], "p99": get["p99_ms"], "p99_ok": get["max_ms"], "errors": g["timeouts"],
                "non2xx": g["timeouts"], "non2xx_pct": 100 * g["timeouts"] / plan.slow_gets}  # type: ignore[operator] # fmt: skip
    raise ValueError(case)


def upload_script(log_dir: Path, size: int) -> Path:
    path = log_dir / f"upload-{size}.lua"
    path.write_text(
        f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n'
        f'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        f'wrk.headers["Content-Length"] = "{size}"\n'
    )
    return path


class EchoClient(asyncio.Protocol):
    """One WebSocket connection that keeps one tiny text message in flight (raw frames: no library
    on the client's hot path, so the client costs little next to the server)."""

    FRAME = b"\x81\x84\x00\x00\x00\x00ping"  # FIN+text, masked with a zero key: payload stays "ping"
    HANDSHAKE = (
        b"GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )

    def __init__(self, stats: dict[str, object]) -> None:
        self.stats, self.buf, self.upgraded, self.sent_at = stats, b"", False, 0.0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport.write(self.HANDSHAKE)

    def go(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.FRAME)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(head[:40].decode(errors="replace")))
                return
            self.upgraded, self.buf = True, rest
            self.ready.set_result(None)
        while len(self.buf) >= 2:
            n = self.buf[1] & 0x7F  # the echo is tiny; longer frames (126/127) never come here
            if len(self.buf) < 2 + n:
                return
            opcode, self.buf = self.buf[0] & 0x0F, self.buf[2 + n :]
            if opcode == 1 and self.stats["on"]:
                self.stats["count"] += 1  # type: ignore[operator]
                self.stats["rtts"].append(time.perf_counter() - self.sent_at)  # type: ignore[attr-defined]
            if opcode == 1 and not self.stats["stop"]:
                self.go()


async def ws_echo(port: int, conns: int, duration_s: float, warmup_s: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    stats: dict[str, object] = {"count": 0, "rtts": [], "on": False, "stop": False}
    clients = []
    for _ in range(conns):
        _, c = await loop.create_connection(lambda: EchoClient(stats), "127.0.0.1", port)
        clients.append(c)
    await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), 30)
    for c in clients:
        c.go()
    await asyncio.sleep(warmup_s)
    stats["on"], t0 = True, time.perf_counter()
    await asyncio.sleep(duration_s)
    stats["on"], stats["stop"], elapsed = False, True, time.perf_counter() - t0
    for c in clients:
        c.transport.close()
    rtts = sorted(stats["rtts"])  # type: ignore[call-overload]
    q = (lambda f: rtts[min(len(rtts) - 1, int(len(rtts) * f))] * 1e3) if rtts else (lambda f: float("nan"))
    return {
        "requests": float(stats["count"]),
        "seconds": elapsed,
        "p50": q(0.5),
        "p99": q(0.99),
        "errors": 0.0,
    }  # type: ignore[arg-type]


# ------------------------------------------------------------------ one round


@dataclass
class Plan:
    duration: float
    hello_conns: list[int]
    download_size: int
    upload_size: int
    ws_conns: int
    overload_s: float = 10.0
    io_conns: int = 3000
    cpu_conns: int = 1000
    c10k_conns: int = 10000
    slow_conns: int = 600
    slow_gets: int = 50
    ws10k_conns: int = 10_000
    ws10k_rounds: int = 3  # echo rounds on the held connections
    ws10k_spread_s: float = 3.0  # one echo round's messages go out over this long


def measure(
    server: Server,
    procs: list[subprocess.Popen[bytes]],
    case: str,
    variant: str,
    unit_scale: float,
    run: Callable[[], dict[str, float]],
) -> None:
    cpu0 = cpu_by_role(procs)
    r = run()
    cpu1 = cpu_by_role(procs)
    units = r["requests"] * unit_scale  # requests, messages, or MiB
    r["rate"] = units / r["seconds"]
    for role in cpu0:
        r[f"cpu_{role}"] = (cpu1[role] - cpu0[role]) / max(units, 1e-9) * 1e6
    r["cpu"] = r["cpu_fe"] + r["cpu_wk"] + r["cpu_sup"]
    server.results.setdefault((case, variant), []).append(r)


def run_overload(server: Server, case: str, plan: Plan, log_dir: Path) -> None:
    """An overload case on a server of its own, started for it: no earlier case warmed it."""
    port = free_port()
    procs = server.start(port, log_dir)
    try:
        wait_ready(port, procs)
        measure(server, procs, case, OVERLOAD_VARIANT[case](plan), 1, lambda: overload_case(case, port, plan))
    finally:
        stop(procs)


OVERLOAD_VARIANT = {
    "io-burst": lambda p: f"c{p.io_conns} 50ms w2",
    "cpu-overload": lambda p: f"c{p.cpu_conns} 2ms w2",
    "c10k": lambda p: f"{p.c10k_conns} once w1",
    "slow-upload": lambda p: f"{p.slow_conns}+{p.slow_gets} w1",
}


def ws10k_limits(n: int) -> None:
    """bench_ws.py's file limit for ``n`` WebSockets (servers inherit it), or a one-line exit."""
    import resource

    import bench_ws

    need = n + 1024  # per process: the client holds n sockets, the server's front end n more
    try:
        bench_ws.raise_fd_limit(n)
    except (ValueError, OSError) as e:
        sys.exit(f"ws-10k: cannot raise the open-file limit to {need}: {e}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        sys.exit(f"ws-10k: {n:,} WebSockets need {need:,} open files per process; the limit is {soft:,} "
                 f"(hard {hard:,}: raise it with ulimit -Hn, or leave the case out)")  # fmt: skip


def run_ws10k(server: Server, plan: Plan, log_dir: Path) -> None:
    """ws-10k on a server of its own, started for it, with bench_ws.py's client (``hold``)."""
    import bench_ws
    import uvloop

    port = free_port()
    procs = server.start(port, log_dir)
    try:
        wait_ready(port, procs)
        cpu0 = cpu_by_role(procs)
        url = f"ws://127.0.0.1:{port}/"  # bench_app.py echoes a WebSocket on any path
        hold = bench_ws.hold(url, plan.ws10k_conns, plan.ws10k_rounds, plan.ws10k_spread_s, procs[0])
        r: dict[str, Any] = uvloop.run(hold)  # as bench_ws.py runs it: the client on uvloop
        cpu1 = cpu_by_role(procs)
    finally:
        stop(procs)
    kib, nan = r["kib_per_conn"], float("nan")
    cpu = {role: (cpu1[role] - cpu0[role]) / max(r["open"], 1) * 1e6 for role in cpu0}
    server.results.setdefault((WS10K, f"{plan.ws10k_conns} idle"), []).append(
        {"kib": kib.get("frontend", kib.get("all", nan)), "kib_wk": kib.get("appserver", nan),
         "open": r["open"], "answered": r["answered"], "sent": r["sent"], "p50": r["p50_ms"], "p99": r["p99_ms"],
         "cpu": cpu["fe"] + cpu["wk"] + cpu["sup"], "cpu_fe": cpu["fe"], "cpu_wk": cpu["wk"]}  # fmt: skip
    )


def run_server(server: Server, selected: set[str], plan: Plan, log_dir: Path) -> None:
    for case in sorted(server.cases & selected & set(OVERLOAD)):
        run_overload(server, case, plan, log_dir)
    if WS10K in server.cases & selected:
        run_ws10k(server, plan, log_dir)
    if not (server.cases & selected) - set(OVERLOAD) - {WS10K}:
        return
    port = free_port()
    procs = server.start(port, log_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(port, procs)
        d = plan.duration
        todo = server.cases & selected
        if todo & {"hello", "hello-log", "scaleout"}:
            wrk(f"{base}/", 64, 1)  # warm-up
        if "hello" in todo and "cap8" not in server.name:
            for c in plan.hello_conns:
                measure(server, procs, "hello", f"c{c}", 1, lambda c=c: wrk(f"{base}/", c, d))
        if "hello-log" in todo:
            measure(server, procs, "hello-log", "c64", 1, lambda: wrk(f"{base}/", 64, d))
        if "fastapi" in todo:  # a realistic endpoint (fastapi_app.py): two app processes each, c64
            url = f"{base}/fastapi/items/42?q=shoes"
            wrk(url, 64, 1)  # warm-up (and the app's first import)
            measure(server, procs, "fastapi", "c64", 1, lambda: wrk(url, 64, d))
        if "download" in todo:
            size = plan.download_size
            measure(
                server,
                procs,
                "download",
                f"{size // MIB} MiB",
                size / MIB,
                lambda: wrk(f"{base}/big?size={size}", 1, d),
            )
        if "upload" in todo:
            size, script = plan.upload_size, upload_script(log_dir, plan.upload_size)
            measure(
                server,
                procs,
                "upload",
                f"{size // MIB} MiB",
                size / MIB,
                lambda: wrk(f"{base}/upload", 1, d, script),
            )
        if "ws" in todo:
            n = plan.ws_conns
            measure(
                server,
                procs,
                "ws",
                f"{n} conns",
                1,
                lambda: asyncio.run(ws_echo(port, n, d, min(1.0, d / 2))),
            )
        if "h2" in todo and shutil.which("h2load"):
            h2load(f"{base}/", 16, 32, 1, log_dir)  # warm-up
            measure(server, procs, "h2", "c16 m32", 1, lambda: h2load(f"{base}/", 16, 32, d, log_dir))
        if "scaleout" in todo:
            measure(server, procs, "scaleout", "5 ms app, c256", 1, lambda: wrk(f"{base}/sleep", 256, d))
    finally:
        stop(procs)


def run_wire() -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE / "bench_wire.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    m = re.search(r"wire round trips: ([\d,]+)/s.*front end ([\d.]+) µs, worker ([\d.]+) µs", out.stdout)
    if not m:
        raise RuntimeError(f"bench_wire.py failed: {out.stderr[-500:]}")
    rate, fe_us, wk_us = float(m.group(1).replace(",", "")), float(m.group(2)), float(m.group(3))
    return {
        "rate": rate,
        "p50": float("nan"),
        "p99": float("nan"),
        "errors": 0.0,
        "cpu": fe_us + wk_us,
        "cpu_fe": fe_us,
        "cpu_wk": wk_us,
    }


# ------------------------------------------------------------------ report

UNIT = {
    "hello": "req/s",
    "hello-log": "req/s",
    "fastapi": "req/s",
    "download": "MiB/s",
    "upload": "MiB/s",
    "ws": "msg/s",
    "h2": "req/s",
    "scaleout": "req/s",
    "wire": "rt/s",
}
CPU_UNIT = {"download": "µs/MiB", "upload": "µs/MiB", "ws": "µs/msg"}
ANCHORS = {
    "hello": ("uvicorn w2", "uvicorn w1", "nginx>uvicorn"),
    "hello-log": ("uvicorn w2 log",),
    "fastapi": ("uvicorn w2",),
    "download": ("uvicorn w1", "nginx>uvicorn"),
    "upload": ("uvicorn w1", "nginx>uvicorn"),
    "ws": ("uvicorn w2", "uvicorn w1"),
    "ws-10k": ("uvicorn w2", "uvicorn w1"),
    "h2": ("hypercorn w2", "hypercorn w1"),
    "scaleout": ("uvicorn w2",),
    "io-burst": ("uvicorn w2",),
    "cpu-overload": ("uvicorn w2",),
    "c10k": ("uvicorn w1",),
    "slow-upload": ("uvicorn w1",),
}


def overload_report(all_servers: list[Server]) -> list[str]:
    """The overload cases: goodput, what was refused or lost, p99 of every answer and of the 2xx."""
    med = statistics.median
    head = (f"{'case':<13} {'variant':<16} {'server':<15} {'goodput median (min-max)':>30} {'non-2xx':>9} "
            f"{'%':>6} {'p99 ms':>8} {'p99 2xx':>8}  ratios to the uvicorn row")  # fmt: skip
    lines = [head, "-" * len(head)]
    for case in [c for c in CASES if c in OVERLOAD]:
        counted = case in ("c10k", "slow-upload")  # answers counted, not a rate
        unit = {"c10k": "x 200", "slow-upload": "GETs ok"}.get(case, "2xx/s")

        def good(r: dict[str, float], counted: bool = counted) -> float:
            return r["requests"] if counted else r["rate"]

        for _, variant in sorted({k for s in all_servers for k in s.results if k[0] == case}):
            rows = [(s.name, s.results[(case, variant)]) for s in all_servers if (case, variant) in s.results]
            anchor = {n: rs for n, rs in rows if n in ANCHORS[case]}
            for name, rs in rows:
                rate = med(good(r) for r in rs)
                span = f"{rate:,.0f} ({min(good(r) for r in rs):,.0f}-{max(good(r) for r in rs):,.0f}) {unit}"
                p99, p99ok = med(r["p99"] for r in rs), med(r["p99_ok"] for r in rs)
                ratios = ""
                for a, ars in anchor.items():
                    arate, ap99 = med(good(r) for r in ars), med(r["p99"] for r in ars)
                    if a == name or not arate or not ap99:
                        continue
                    ratios += f"goodput {rate / arate:.3f}x  p99 {p99 / ap99:.2f}x"
                    if case == "cpu-overload":  # the admitted requests' p99 against the anchor's 2xx
                        ratios += f"  p99 2xx {p99ok / med(r['p99_ok'] for r in ars):.2f}x"
                lines.append(
                    f"{case:<13} {variant:<16} {name:<15} {span:>30} {med(r['non2xx'] for r in rs):>9,.0f} "
                    f"{med(r['non2xx_pct'] for r in rs):>6.2f} {p99:>8.1f} {p99ok:>8.1f}  {ratios}"
                )
            lines.append("")
    lines.append(
        "non-2xx, %, p99: medians over rounds. p99 2xx: the 2xx alone (cpu-overload); for c10k and "
        "slow-upload the slowest answer. c10k and slow-upload count answers, not a rate."
    )
    return lines


def ws10k_report(all_servers: list[Server]) -> list[str]:
    """ws-10k: RSS per connection, echoes answered, echo latency, CPU per connection; ratios to uvicorn."""
    med = statistics.median
    head = (f"{'case':<9} {'variant':<12} {'server':<15} {'KiB/conn median (min-max)':>26} {'wk KiB':>6} "
            f"{'opened':>13} {'answered/sent':>15} {'p50 ms':>7} {'p99 ms':>8} {'CPU µs/conn':>11} "
            f"{'fe/wk µs':>10}  ratios (median/median)")  # fmt: skip
    lines = [head, "-" * len(head)]
    for _, variant in sorted({k for s in all_servers for k in s.results if k[0] == WS10K}):
        rows = [(s.name, s.results[(WS10K, variant)]) for s in all_servers if (WS10K, variant) in s.results]
        anchors = {n: rs for n, rs in rows if n in ANCHORS[WS10K]}
        for name, rs in rows:
            kib, p50, p99 = med(r["kib"] for r in rs), med(r["p50"] for r in rs), med(r["p99"] for r in rs)
            span = f"{kib:.1f} ({min(r['kib'] for r in rs):.1f}-{max(r['kib'] for r in rs):.1f})"
            n = int(variant.split()[0])
            opened = f"{med(r['open'] for r in rs):,.0f}/{n:,}"
            answered = f"{med(r['answered'] for r in rs):,.0f}/{med(r['sent'] for r in rs):,.0f}"
            zasgi = name.startswith("zasgi")
            split = f"{med(r['cpu_fe'] for r in rs):.0f}/{med(r['cpu_wk'] for r in rs):.0f}" if zasgi else ""
            ratios = "  ".join(
                f"KiB {kib / med(r['kib'] for r in ars):.2f}x  p50 {p50 / med(r['p50'] for r in ars):.2f}x  "
                f"p99 {p99 / med(r['p99'] for r in ars):.2f}x {a}"
                for a, ars in anchors.items()
                if a != name and zasgi
            )
            wk = f"{med(r['kib_wk'] for r in rs):.1f}" if zasgi else ""
            lines.append(
                f"{WS10K:<9} {variant:<12} {name:<15} {span:>26} {wk:>6} {opened:>13} {answered:>15} "
                f"{p50:>7.2f} {p99:>8.1f} {med(r['cpu'] for r in rs):>11.0f} {split:>10}  {ratios}"
            )
        lines.append("")
    lines.append(
        "KiB/conn: RSS growth per open WebSocket over the idle server (zasgi: the front end alone, "
        "wk: its app server; others: every process). CPU per connection: its whole life (open, echoes, "
        "close). opened, answered/sent, p50, p99: medians over rounds."
    )
    return lines


def report(all_servers: list[Server], wire: list[dict[str, float]]) -> str:
    lines = []
    keys = []
    for s in all_servers:
        for k in s.results:
            if k not in keys:
                keys.append(k)
    keys = [k for k in keys if k[0] not in OVERLOAD and k[0] != WS10K]
    keys.sort(key=lambda k: CASES.index(k[0]))
    if any(k[0] in OVERLOAD for s in all_servers for k in s.results):
        lines += overload_report(all_servers) + [""]
    ws10k = ws10k_report(all_servers) if any(k[0] == WS10K for s in all_servers for k in s.results) else []
    if ws10k and not keys and not wire:  # ws-10k alone: no empty main table
        return "\n".join(lines + ws10k)
    head = (
        f"{'case':<9} {'variant':<15} {'server':<15} {'rate median (min-max)':>28} "
        f"{'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU/unit':>9} {'fe/wk µs':>11} {'err':>4}  ratios (median/median)"
    )
    lines += [head, "-" * len(head)]
    med = statistics.median
    for case, variant in keys:
        rows = [(s.name, s.results[(case, variant)]) for s in all_servers if (case, variant) in s.results]
        anchors = {name: med(r["rate"] for r in rs) for name, rs in rows if name in ANCHORS.get(case, ())}
        for name, rs in rows:
            rate = med(r["rate"] for r in rs)
            span = f"{rate:,.0f} ({min(r['rate'] for r in rs):,.0f}-{max(r['rate'] for r in rs):,.0f})"
            split = (
                f"{med(r['cpu_fe'] for r in rs):.0f}/{med(r['cpu_wk'] for r in rs):.0f}"
                if name.startswith("zasgi")
                else ""
            )
            ratios = "  ".join(f"{rate / a:.2f}x {n}" for n, a in anchors.items() if n != name and a > 0)
            lines.append(
                f"{case:<9} {variant:<15} {name:<15} {span + ' ' + UNIT[case]:>28} "
                f"{med(r['p50'] for r in rs):>7.2f} {med(r['p99'] for r in rs):>7.2f} "
                f"{med(r['cpu'] for r in rs):>9.0f} {split:>11} {sum(r['errors'] for r in rs):>4.0f}  "
                f"{ratios if name.startswith('zasgi') else ''}"
            )
        lines.append("")
    if wire:
        rates = [w["rate"] for w in wire]
        lines.append(
            f"{'wire':<9} {'64 in flight':<15} {'ROUTER<>DEALER':<15} "
            f"{f'{med(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) rt/s':>28} {'':>15} "
            f"{med(w['cpu'] for w in wire):>9.1f} {med(w['cpu_fe'] for w in wire):>5.1f}/"
            f"{med(w['cpu_wk'] for w in wire):<5.1f}"
        )
    lines.append(
        "CPU/unit: CPU µs per request (hello, scaleout), per MiB (download, upload), per message (ws), "
        "summed over every process of the server; fe/wk: zasgi's front end / app servers."
    )
    if ws10k:
        lines += [""] + ws10k
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 1 s, tiny sizes (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument(
        "--cases",
        default=",".join(c for c in CASES if c not in OVERLOAD),
        help=f"comma-separated subset of {','.join(CASES)} [default: all but the overload cases]",
    )
    parser.add_argument("--servers", default="", help="comma-separated server names to keep (default: all)")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (e.g. `git worktree add`): adds a 'zasgi@base w1' row"
    )
    args = parser.parse_args()
    raise_fd_limit()
    selected = {c.strip() for c in args.cases.split(",") if c.strip()}
    if selected - set(CASES):
        parser.error(f"unknown case(s): {', '.join(sorted(selected - set(CASES)))}")
    if args.quick:
        plan, rounds = Plan(1.0, [64], 1 * MIB, 1 * MIB, 10, 2.0, 300, 100, 1000, 60, 10), 1
    else:
        plan, rounds = Plan(args.duration, [1, 64, 256], 10 * MIB, 50 * MIB, 100), args.rounds
    if args.quick:  # ws-10k: a few hundred WebSockets are enough to see it work
        plan.ws10k_conns, plan.ws10k_rounds, plan.ws10k_spread_s = 200, 1, 0.5
    keep = {n.strip() for n in args.servers.split(",") if n.strip()}
    want_nginx = bool(selected & {"hello", "download", "upload"}) and (not keep or "nginx>uvicorn" in keep)
    all_servers = servers(selected, ensure_tools(want_nginx, "h2" in selected), args.quick, args.baseline)
    if keep:
        all_servers = [s for s in all_servers if s.name in keep or s.name == "zasgi@base w1"]
    if WS10K in selected and any(WS10K in s.cases for s in all_servers):
        ws10k_limits(plan.ws10k_conns)
    log_dir = Path(tempfile.mkdtemp(prefix="zasgi-bench-"))
    wire: list[dict[str, float]] = []
    started = time.monotonic()
    for i in range(rounds):
        for server in all_servers:
            print(f"round {i + 1}/{rounds}: {server.name}", file=sys.stderr, flush=True)
            run_server(server, selected, plan, log_dir)
        if "wire" in selected:
            wire.append(run_wire())
    print(report(all_servers, wire))
    print(
        f"\n{rounds} round(s) in {time.monotonic() - started:.0f} s; load average now "
        f"{os.getloadavg()[0]:.2f}; server logs: {log_dir}"
    )


if __name__ == "__main__":
    main()
