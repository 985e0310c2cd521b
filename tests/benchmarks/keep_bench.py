"""WebSockets and long streams across rolling restarts, under the chaos test's mixed load (issue 20).

    python -m tests.benchmarks.keep_bench [--workers 2] [--rolls 3] [--sse 10] [--sse-events 60]

Starts ``zasgi run tests.apps.probe:app`` (defaults: --timeout-graceful-shutdown 5,
--timeout-stream-drain and --max-lingering as shipped), puts on it the load of
tests/chaos/load.py (50 keep-alive HTTP clients, 10 clients of 20 MiB and slow
streams, 10 WebSockets on an app that opts in to handoff, 10 ordinary echo
WebSockets that stay open) plus ``--sse`` Server-Sent Events streams of
``--sse-events`` events a second apart (minute-long by default), rolls the pool
``--rolls`` times by SIGHUP (each roll waits for the new workers, then
``--between`` seconds), and reports: HTTP requests failed, streams cut or
corrupt, WebSockets closed, frames lost, SSE streams whole, and the memory
(RSS, USS) of the lingering workers beside a fresh one. Not a CI test: it
takes minutes (tests/integration/test_keep.py is the CI version, with short
streams). Exit code 1 if anything a client saw went wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.chaos.load import SseReader, Tally, start_load, stop_load
from tests.integration.conftest import Server, start_run, stop

ADMIN_IN_BANNER = r"\n  admin +(http://\S+)"


async def _workers(session: aiohttp.ClientSession, admin: str) -> list[dict[str, Any]]:
    async with session.get(f"{admin}/workers") as response:
        return (await response.json())["workers"]  # type: ignore[no-any-return]


def _memory(pids: list[int]) -> list[tuple[int, float, float]]:
    out = []
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
            out.append((pid, info.rss / 2**20, info.uss / 2**20))
        except psutil.Error:
            pass
    return out


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="zkeep-"))
    server: Server = start_run(tmp, "--timeout-graceful-shutdown", str(args.grace), "--admin-port", "0",
                               "--log-level", "info", "--no-access-log", workers=args.workers)  # fmt: skip
    try:
        admin = re.search(ADMIN_IN_BANNER, server.procs[0].log()).group(1)  # type: ignore[union-attr]
        return await _measure(server, admin, args)
    finally:
        stop(server)
        print(f"logs: {tmp}")


async def _measure(server: Server, admin: str, args: argparse.Namespace) -> int:
    tally, stop_event = Tally(), asyncio.Event()
    began = time.monotonic()
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=args.sse_events * 2 + 120)
    ) as session:
        readers = [SseReader(n=args.sse_events, delay_s=1.0) for _ in range(args.sse)]
        started = [asyncio.Event() for _ in readers]
        sse_tasks = [
            asyncio.create_task(r.run(session, server.url, e)) for r, e in zip(readers, started, strict=True)
        ]
        load = start_load(server.url, tally, stop_event)
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 60)
        await asyncio.sleep(3.0)
        lingering_rss: list[tuple[int, float, float]] = []
        fresh_rss: list[tuple[int, float, float]] = []
        old = {w["pid"] for w in await _workers(session, admin)}
        for roll in range(args.rolls):
            tally.roll_started = time.monotonic()
            server.procs[0].signal(signal.SIGHUP)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                workers = await _workers(session, admin)
                ready = {w["pid"] for w in workers if w["state"] == "ready"}
                if len(ready) == args.workers and not ready & old:
                    break
                await asyncio.sleep(0.2)
            else:
                raise SystemExit(f"roll {roll + 1}: new workers not ready in 120 s")
            took = time.monotonic() - tally.roll_started
            await asyncio.sleep(args.grace + 1)  # past the grace: what lingers now lingers for its sessions
            workers = await _workers(session, admin)
            lingering = [w for w in workers if w["state"] == "lingering"]
            left = sum(w["in_flight"] + w["ws_in_flight"] for w in lingering)
            print(f"roll {roll + 1}: new workers ready in {took:.1f}s; {len(lingering)} lingering with "
                  f"{left} "
                  f"sessions; {tally.summary()}", flush=True)  # fmt: skip
            lingering_rss = _memory([w["pid"] for w in lingering])
            fresh_rss = _memory(sorted(ready))
            old = ready
            await asyncio.sleep(args.between)
        await asyncio.wait_for(asyncio.gather(*sse_tasks), args.sse_events * 2 + 120)
        await stop_load(load, stop_event)
        after = await _workers(session, admin)
    took = time.monotonic() - began
    whole = sum(r.whole for r in readers)
    events = sum(len(r.ids) for r in readers)
    lost = sum(args.sse_events - len(r.ids) for r in readers)
    print(f"\n{args.rolls} rolling restarts of {args.workers} workers in {took:.0f}s (grace {args.grace}s):")
    print(f"  HTTP requests: {tally.http_ok} ok, {len(tally.http_failed)} failed {tally.http_failed[:3]}")
    print(f"  20 MiB and slow streams: {tally.streams_ok} whole, {len(tally.streams_bad)} cut or corrupt "
          f"{tally.streams_bad[:3]}")  # fmt: skip
    print(f"  ordinary WebSockets: {tally.plain_messages} echoes, closes {dict(tally.plain_closes)}, "
          f"{len(tally.plain_failures)} failures {tally.plain_failures[:3]}")  # fmt: skip
    print(f"  handoff WebSockets: {tally.handoff_messages} messages, "
          f"{tally.handoff_worker_changes} handoffs, "
          f"{len(tally.handoff_failures)} failures {tally.handoff_failures[:3]}")  # fmt: skip
    print(f"  SSE streams ({args.sse_events} events, 1 s apart): {whole}/{len(readers)} whole, "
          f"{events} events, {lost} lost, errors {[e for r in readers for e in r.errors][:3]}")  # fmt: skip
    if lingering_rss:
        rss = [m[1] for m in lingering_rss]
        uss = [m[2] for m in lingering_rss]
        print(f"  lingering workers after the last roll: RSS median {statistics.median(rss):.1f} MiB "
              f"(min {min(rss):.1f}, max {max(rss):.1f}), "
              f"USS median {statistics.median(uss):.1f} MiB")  # fmt: skip
    if fresh_rss:
        print(f"  fresh workers: RSS median {statistics.median([m[1] for m in fresh_rss]):.1f} MiB, "
              f"USS median {statistics.median([m[2] for m in fresh_rss]):.1f} MiB")  # fmt: skip
    print(f"  at the end: {sorted(w['state'] for w in after)}")
    bad = (tally.http_failed or tally.streams_bad or tally.plain_failures or tally.handoff_failures
           or sum(tally.plain_closes.values()) or whole != len(readers))  # fmt: skip
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rolls", type=int, default=3)
    parser.add_argument(
        "--between", type=float, default=8.0, help="seconds between rolls, after each is done"
    )
    parser.add_argument("--grace", type=float, default=5.0, help="--timeout-graceful-shutdown")
    parser.add_argument("--sse", type=int, default=10, help="Server-Sent Events streams")
    parser.add_argument("--sse-events", type=int, default=60, help="events per stream, 1 s apart")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
