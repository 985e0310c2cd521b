#!/usr/bin/env python3
"""Hello-world throughput: zasgi and uvicorn side by side, interleaved, medians and ratios.

Run from the repository root: ``python tests/benchmarks/bench_http.py [--quick]``.
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP = "examples.hello:app"


def ensure_tools() -> None:
    if shutil.which("wrk") is None:
        if os.geteuid() != 0:
            sys.exit("wrk is missing and we are not root: apt-get install wrk")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    try:
        import psutil  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uvicorn[standard]", "psutil"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Case:
    name: str
    argv: list[str]
    ready: str  # a regex on the server's output
    results: dict[int, list[dict[str, float]]] = field(default_factory=dict)


def cases(port: int) -> list[Case]:
    zasgi = [sys.executable, "-m", "appserver.cli", "run", APP, "--port", str(port), "--log-level", "warning"]
    uvicorn = [sys.executable, "-m", "uvicorn", APP, "--port", str(port), "--http", "httptools",
               "--loop", "uvloop", "--log-level", "warning", "--no-access-log"]  # fmt: skip
    return [
        Case("zasgi w1", [*zasgi, "--workers", "1"], r"zasgi running on"),
        Case("zasgi w2", [*zasgi, "--workers", "2"], r"zasgi running on"),
        Case("uvicorn w1", uvicorn, r""),
        Case("uvicorn w2", [*uvicorn, "--workers", "2"], r""),
    ]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not come up")


def cpu_seconds(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    except psutil.NoSuchProcess:
        pass
    return total


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out: str) -> dict[str, float]:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": float(requests.group(1)) if requests else 0.0,
        "errors": float(errors.group(1)) if errors else 0.0
        + (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0),
    }


def run_case(case: Case, port: int, conns: list[int], duration_s: float, log_dir: Path) -> None:
    log = open(log_dir / f"{case.name.replace(' ', '_')}.log", "ab")
    proc = subprocess.Popen(case.argv, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(["wrk", "-t1", "-c64", "-d1s", url], capture_output=True, check=True)  # warm-up
        for c in conns:
            cpu0 = cpu_seconds(proc.pid)
            out = subprocess.run(["wrk", "-t1", f"-c{c}", f"-d{duration_s:g}s", "--latency", url],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            result = parse_wrk(out)
            result["cpu_us_per_req"] = (cpu_seconds(proc.pid) - cpu0) / max(result["requests"], 1) * 1e6
            case.results.setdefault(c, []).append(result)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def report(all_cases: list[Case], conns: list[int]) -> None:
    by_name = {c.name: c for c in all_cases}
    print(f"\n{'server':<12} {'conns':>5} {'req/s median (min-max)':>28} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU us/req':>10} {'errors':>6} {'vs uv w1':>9} {'vs uv w2':>9}")  # fmt: skip
    for c in conns:
        anchors = {k: statistics.median(r["rps"] for r in by_name[k].results[c]) for k in ("uvicorn w1", "uvicorn w2")}
        for case in all_cases:
            rs = case.results[c]
            rps = statistics.median(r["rps"] for r in rs)
            print(f"{case.name:<12} {c:>5} {med([r['rps'] for r in rs]):>28} "
                  f"{statistics.median(r['p50'] for r in rs):>8.2f} {statistics.median(r['p99'] for r in rs):>8.2f} "
                  f"{statistics.median(r['cpu_us_per_req'] for r in rs):>10.0f} {sum(r['errors'] for r in rs):>6.0f} "
                  f"{rps / anchors['uvicorn w1']:>8.2f}x {rps / anchors['uvicorn w2']:>8.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round, 1 s, c64 only (smoke test)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    ensure_tools()
    rounds, duration, conns = (1, 1.0, [64]) if args.quick else (args.rounds, args.duration, [64, 256])
    port = free_port()
    all_cases = cases(port)
    log_dir = Path(tempfile.mkdtemp(prefix="zasgi-bench-"))
    for i in range(rounds):
        for case in all_cases:
            print(f"round {i + 1}/{rounds}: {case.name}", file=sys.stderr, flush=True)
            run_case(case, port, conns, duration, log_dir)
    report(all_cases, conns)
    print(f"\nserver logs: {log_dir}")


if __name__ == "__main__":
    main()
