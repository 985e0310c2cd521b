#!/usr/bin/env python3
"""Where the CPU per request goes: py-spy on zasgi's front end and app server under wrk load.

    python tests/benchmarks/profile_hot_path.py [--conns 64] [--seconds 15] [--path /]
    python tests/benchmarks/profile_hot_path.py --summarize fe.txt wk.txt   # existing raw profiles

Starts ``zasgi run --workers 1`` on bench_app.py, drives it with ``wrk -t1``, records both
processes with ``py-spy record --format raw --nonblocking`` (installed from PyPI when missing),
reads their CPU time from /proc over the same window, and prints for each process: CPU µs per
request, samples by layer (aiohttp web layer, our bridge, zmq, codec/msgpack, app,
asyncio/uvloop...), and the top functions by self time. py-spy does not sample idle time, so
samples are CPU; C extensions (msgpack, zmq's Cython, aiohttp's C parser) count toward the
Python frame that calls them.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the same servers, wrk and /proc helpers)

# First match wins, tested against the innermost frame's file.
LAYERS = [
    ("aiohttp web layer", r"aiohttp/|multidict/|yarl/|propcache/"),
    ("front end: wire channel (zmq I/O)", r"wire/channel\.py"),
    ("wire codec + msgpack", r"wire/codec\.py|msgpack/|wire/events\.py"),
    ("wire other (states, flow, scope)", r"wire/"),
    ("zmq (pyzmq)", r"zmq/"),
    ("our code (frontend/ or appserver/)", r"frontend/|appserver/"),
    ("app", r"bench_app\.py"),
    ("asyncio / uvloop", r"asyncio/|uvloop/|<frozen runpy>|contextvars"),
    ("logging", r"logging/"),
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?):\d+\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def layer_of(frame: str) -> str:
    m = FRAME.match(frame)
    file = m.group("file") if m else frame
    for name, pattern in LAYERS:
        if re.search(pattern, file):
            return name
    return "other (stdlib etc.)"


def function(frame: str) -> str:
    """``func (file:line)`` -> ``func (file)``: count a function once, whatever line."""
    m = FRAME.match(frame)
    return f"{m.group('func')} ({m.group('file')})" if m else frame


def summarize(path: Path, us_per_request: float | None = None, top: int = 15) -> str:
    stacks = parse(path)
    total = sum(c for _, c in stacks) or 1
    layers: collections.Counter[str] = collections.Counter()
    selfs: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()  # inclusive, our functions
    for frames, count in stacks:
        leaf = frames[-1]
        layers[layer_of(leaf)] += count
        selfs[function(leaf)] += count
        for f in {function(f) for f in frames}:
            if re.search(r"\((frontend|appserver|wire)/", f) and not re.search(
                r"cli\.py|__main__|worker\.py|supervisor", f
            ):
                ours[f] += count
    scale = (us_per_request or 0) / total
    unit = lambda n: f"{100 * n / total:5.1f}%" + (f" {n * scale:6.1f} µs/req" if us_per_request else "")  # noqa: E731
    out = [
        f"== {path.name}: {total} samples"
        + (f", {us_per_request:.1f} CPU µs/request" if us_per_request else "")
    ]
    out.append("-- by layer (self time of the innermost frame)")
    out += [f"  {unit(n)}  {name}" for name, n in layers.most_common()]
    out.append(f"-- top {top} frames by self time")
    out += [f"  {unit(n)}  {name}" for name, n in selfs.most_common(top)]
    out.append(f"-- top {top} of our functions, inclusive")
    out += [f"  {unit(n)}  {name}" for name, n in ours.most_common(top)]
    return "\n".join(out)


def thread_cpu(proc: psutil.Process) -> tuple[float, float]:  # type: ignore[name-defined]  # noqa: F821
    """CPU seconds of (the main thread, every other thread) of ``proc``."""
    main = other = 0.0
    for t in proc.threads():
        if t.id == proc.pid:
            main += t.user_time + t.system_time
        else:
            other += t.user_time + t.system_time
    return main, other


def ensure_py_spy() -> str:
    if shutil.which("py-spy") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    return shutil.which("py-spy") or "py-spy"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--path", default="/")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--summarize", nargs="+", type=Path, help="only summarize these raw profiles")
    args = parser.parse_args()
    if args.summarize:
        print("\n\n".join(summarize(p) for p in args.summarize))
        return
    bench.ensure_tools(want_nginx=False)
    py_spy = ensure_py_spy()
    out_dir = Path(tempfile.mkdtemp(prefix="zasgi-profile-"))
    port = bench.free_port()
    procs = bench.zasgi(1)(port, out_dir)
    try:
        bench.wait_ready(port, procs)
        import psutil

        roles = {}
        for p in psutil.Process(procs[0].pid).children(recursive=True):
            cmd = " ".join(p.cmdline())
            if "-m frontend" in cmd:
                roles["frontend"] = p
            elif "spawn_main" in cmd:
                roles["appserver"] = p
        url = f"http://127.0.0.1:{port}{args.path}"
        bench.wrk(url, args.conns, 2)  # warm-up
        print(f"profiles in {out_dir}\n")
        for k, proc in roles.items():
            # py-spy counts a runnable-but-preempted thread as busy, at the line where it was
            # preempted (typically a send that woke the peer). Raising the profiled process's
            # priority keeps it from being preempted by the wake-ups it causes, so its samples
            # are CPU; the processes are profiled one at a time for that reason.
            for p in roles.values():
                p.nice(-10 if p is proc else 0)
            result: dict[str, float] = {}
            load = threading.Thread(
                target=lambda result=result: result.update(bench.wrk(url, args.conns, args.seconds + 3))
            )
            load.start()
            time.sleep(1.5)
            cpu0, t0 = thread_cpu(proc), time.monotonic()
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "-p",
                    str(proc.pid),
                    "-d",
                    str(int(args.seconds)),
                    "-r",
                    str(args.rate),
                    "--nonblocking",
                    "-f",
                    "raw",
                    "-o",
                    str(out_dir / f"{k}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            cpu1, elapsed = thread_cpu(proc), time.monotonic() - t0
            load.join()
            rps = result["requests"] / result["seconds"]
            main_s, other_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
            us, other_us = main_s / (rps * elapsed) * 1e6, other_s / (rps * elapsed) * 1e6
            print(
                f"{k} (nice -10): wrk -t1 -c{args.conns} {args.path}: {rps:,.0f} req/s; {k} at "
                f"{100 * (main_s + other_s) / elapsed:.0f}% of a core, {us + other_us:.1f} CPU µs/request: "
                f"{us:.1f} in the Python (main) thread, {other_us:.1f} in other threads (ZeroMQ's I/O "
                "thread, not sampled)"
            )
            print(summarize(out_dir / f"{k}.txt", us), end="\n\n")
    finally:
        bench.stop(procs)


if __name__ == "__main__":
    main()
