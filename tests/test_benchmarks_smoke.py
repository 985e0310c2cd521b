"""The benchmark script (tests/benchmarks/bench.py) starts and completes tiny cases.

CI does not benchmark (that needs quiet cores): this only keeps the script working. It
installs wrk with apt itself when root; without wrk and without root it is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers.processes import REPO

pytestmark = pytest.mark.integration


def test_bench_quick_hello_completes() -> None:
    if shutil.which("wrk") is None and os.geteuid() != 0:
        pytest.skip("wrk is not installed and we are not root to apt-get install it")
    argv = [
        sys.executable,
        "tests/benchmarks/bench.py",
        "--quick",
        "--cases",
        "hello",
        "--servers",
        "zasgi w1,uvicorn w1",
    ]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=100)
    if out.returncode and "could not be installed" in out.stderr:
        pytest.skip(out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr[-3000:]
    row = re.search(r"^hello\s+c64\s+zasgi w1\s+([\d,]+) \(.*?(\d+)\s+([\d.]+)x uvicorn w1", out.stdout, re.M)
    assert row, out.stdout
    assert int(row.group(1).replace(",", "")) > 0
    assert row.group(2) == "0", f"zasgi answered errors under wrk:\n{out.stdout}"


def test_bench_quick_ws10k_completes() -> None:
    """The ws-10k case (scaled to 200 WebSockets by --quick) opens every connection and answers
    every echo on zasgi, and prints its ratios to uvicorn w2."""
    if shutil.which("wrk") is None and os.geteuid() != 0:
        pytest.skip("wrk is not installed and we are not root to apt-get install it")  # bench.py requires it
    argv = [sys.executable, "tests/benchmarks/bench.py", "--quick", "--cases", "ws-10k",
            "--servers", "zasgi w1,uvicorn w2"]  # fmt: skip
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=100)
    if out.returncode and "could not be installed" in out.stderr:
        pytest.skip(out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr[-3000:]
    row = re.search(r"^ws-10k\s+200 idle\s+zasgi w1\s+(-?[\d.]+) .*? (\d+)/200\s+(\d+)/(\d+) .*x uvicorn w2$",
                    out.stdout, re.M)  # fmt: skip
    assert row, out.stdout
    assert row.group(2) == "200", f"zasgi opened fewer than 200 WebSockets:\n{out.stdout}"
    assert row.group(3) == row.group(4) == "200", f"zasgi left echoes unanswered:\n{out.stdout}"


def test_micro_frontend_answers_every_request() -> None:
    """The socket-free microbenchmark of the front end's hot path runs its rounds (it exits
    non-zero if any request went unanswered)."""
    argv = [sys.executable, "tests/benchmarks/micro_frontend.py", "--requests", "320", "--repeat", "1"]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"front end Python per request: [\d.]+ µs", out.stdout), out.stdout


def test_micro_ws_echoes_every_message() -> None:
    """The socket-free WebSocket microbenchmark opens its sessions and every message is echoed
    on both sides (it exits non-zero otherwise)."""
    argv = [sys.executable, "tests/benchmarks/micro_ws.py", "--connections", "4", "--rounds", "5",
            "--repeat", "1"]  # fmt: skip
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"front end [\d.]+ µs, app server [\d.]+ µs", out.stdout), out.stdout


def test_bench_wire_measures_both_transports() -> None:
    """bench_wire.py runs the ZeroMQ hop and the Unix-socket yardstick, each with its round trips
    and both processes' CPU per round trip."""
    argv = [sys.executable, "tests/benchmarks/bench_wire.py", "--in-flight", "4", "--seconds", "0.5",
            "--transport", "both"]  # fmt: skip
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=90,
                         env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = re.findall(r"wire round trips: ([\d,]+)/s .*front end ([\d.]+) µs, worker ([\d.]+) µs", out.stdout)
    assert len(rows) == 2, out.stdout
    assert all(int(rate.replace(",", "")) > 0 and float(fe) > 0 for rate, fe, _ in rows), out.stdout
