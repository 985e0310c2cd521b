"""Front-end rolls under the chaos test's mixed load (issue 19).

    python -m tests.benchmarks.fleet_bench [--frontends 2] [--workers 2] [--rolls 3] [--grace 5]

Starts ``zasgi run tests.apps.probe:app --frontends N``, puts on it the load of
tests/chaos/load.py (50 keep-alive HTTP clients, 10 clients of 20 MiB and slow
streams, 10 WebSockets on an app that opts in to handoff, 10 ordinary echo
WebSockets that reconnect after a close), rolls the front ends ``--rolls``
times by SIGUSR2 (each roll: every front end replaced, new one first; the
next roll waits for "front-end roll complete" and ``--between`` seconds), and
reports: HTTP requests failed (and of those, refused connections), streams
cut or corrupt, WebSocket closes by code. Not a CI test (it takes a minute or
more); tests/integration/test_fleet.py is the CI version. Exit code 1 if a
request failed or a stream was cut.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.load import Tally, start_load, stop_load
from tests.integration.conftest import Server, start_run, stop

REFUSED = ("Connect call failed", "ConnectionRefused", "Cannot connect")


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="zfleet-"))
    server: Server = start_run(tmp, "--frontends", str(args.frontends), "--force",
                               "--timeout-graceful-shutdown", str(args.grace), "--admin-port", "0",
                               "--log-level", "info", "--no-access-log", workers=args.workers)  # fmt: skip
    try:
        return await _measure(server, args)
    finally:
        stop(server)
        print(f"logs: {tmp}")


async def _measure(server: Server, args: argparse.Namespace) -> int:
    tally, stop_event = Tally(), asyncio.Event()
    began = time.monotonic()
    load = start_load(server.url, tally, stop_event)
    await asyncio.sleep(3.0)
    proc = server.procs[0]
    for roll in range(args.rolls):
        done_before = proc.log().count("front-end roll complete")
        tally.roll_started = time.monotonic()
        proc.signal(signal.SIGUSR2)
        deadline = time.monotonic() + 120
        while proc.log().count("front-end roll complete") <= done_before:
            if "front-end roll stopped" in proc.log() or time.monotonic() > deadline:
                raise SystemExit(f"roll {roll + 1} did not complete:\n{proc.log()[-3000:]}")
            await asyncio.sleep(0.2)
        took = time.monotonic() - tally.roll_started
        print(f"roll {roll + 1}: {args.frontends} front end(s) replaced in {took:.1f}s; {tally.summary()}",
              flush=True)  # fmt: skip
        await asyncio.sleep(args.grace + args.between)  # the old ones retire meanwhile
    await stop_load(load, stop_event)
    took = time.monotonic() - began
    refused = [f for f in tally.http_failed if any(r in f for r in REFUSED)]
    print(f"\n{args.rolls} rolls of {args.frontends} front ends ({args.workers} workers) in {took:.0f}s, "
          f"grace {args.grace}s:")  # fmt: skip
    print(f"  HTTP requests: {tally.http_ok} ok, {len(tally.http_failed)} failed ({len(refused)} refused) "
          f"{tally.http_failed[:3]}")  # fmt: skip
    print(f"  20 MiB and slow streams: {tally.streams_ok} whole, "
          f"{len(tally.streams_bad)} truncated or corrupt "
          f"{tally.streams_bad[:3]}")  # fmt: skip
    print(f"  ordinary WebSockets: {tally.plain_messages} echoes, closes by code {dict(tally.plain_closes)}, "
          f"{len(tally.plain_failures)} failures {tally.plain_failures[:3]}")  # fmt: skip
    print(f"  handoff WebSockets: {tally.handoff_messages} messages, "
          f"{tally.handoff_worker_changes} handoffs, "
          f"{len(tally.handoff_failures)} failures {tally.handoff_failures[:3]}")  # fmt: skip
    return 1 if tally.http_failed or tally.streams_bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frontends", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rolls", type=int, default=3)
    parser.add_argument("--between", type=float, default=3.0, help="seconds after the old ones retired")
    parser.add_argument("--grace", type=float, default=5.0, help="--timeout-graceful-shutdown")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
