"""The Autobahn|Testsuite fuzzing client against a real ``zasgi run`` (RFC 6455 and RFC 7692 conformance).

``wstest -m fuzzingclient`` (Python 2.7, installed and cached by
tests/helpers/autobahn.py; skipped, saying why, where no Python 2.7 runs)
drives every case but the 9.* performance ones (they send up to 16 MiB per
message for minutes and test speed, not conformance) against an echo app
(tests/apps/autobahn.py), twice:

* ``deflate``: the default front end (permessage-deflate on): groups 1-7 and
  10 but 6.4.*, and the compression groups 12 and 13 (``CASES_DEFLATE``: in CI
  every compression option with three message shapes; all of 12.* and 13.*
  with ZASGI_AUTOBAHN_FULL=1). The fuzzing client offers the extension only in
  12.* and 13.*, so the other cases are the plain run's on the same path; 6.4.*
  (four cases of 2 s of deliberate pauses each) run once, in the plain run;
* ``plain``: ``--no-ws-per-message-deflate``: groups 1-7 and 10.

Every case must come out OK, NON-STRICT or INFORMATIONAL (and its close OK or
INFORMATIONAL), reported per case group. The harness only speaks to the
server over a socket, so it holds for any WebSocket implementation behind the
front end. Also here: deflate was really negotiated (the report's handshake),
and fragmented messages with control frames between the fragments come back
whole.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.autobahn import AutobahnUnavailable, wstest
from tests.helpers.processes import Proc, zasgi

from .conftest import READY_RUN

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

APP = "tests.apps.autobahn:app"
HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
GOOD = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}
GROUPS = ("1", "2", "3", "4", "5", "6", "7", "10")
CASES_PLAIN = [f"{g}.*" for g in GROUPS]
# 12.N.M / 13.N.M: N (1..5, 1..7) picks the compression options, M (1..18) the message: 1000 echoes of
# 16 B (M=1) .. 128 KiB (M=10), then fragmented. CI runs every option with 16 B and 4 KiB messages
# (M = 1, 5), and 8 KiB in 256-byte fragments (M = 11, the slowest: 5-17 s each on a shared machine)
# with the first option of each group; ZASGI_AUTOBAHN_FULL=1 runs all 216 (tens of minutes).
_SAMPLE = [
    f"{g}.{n}.{m}" for g, options in (("12", 5), ("13", 7)) for n in range(1, options + 1) for m in (1, 5)
]
CASES_DEFLATE = CASES_PLAIN + _SAMPLE + ["12.1.11", "13.1.11"]
CASES_DEFLATE_FULL = CASES_PLAIN + ["12.*", "13.*"]
WSTEST_TIMEOUT_S = 1200.0


@dataclass
class Run:
    """One fuzzingclient run: each case's result, and the report directory."""

    results: dict[str, dict[str, Any]]
    reports: Path
    seconds: float

    def group(self, group: str) -> dict[str, dict[str, Any]]:
        return {case: r for case, r in self.results.items() if case.split(".")[0] == group}

    def bad(self, group: str) -> list[str]:
        cases = sorted(self.group(group).items())
        return [f"{case}: {r['behavior']}/{r['behaviorClose']}" for case, r in cases
                if r["behavior"] not in GOOD or r["behaviorClose"] not in GOOD_CLOSE]  # fmt: skip


@pytest.fixture(scope="module")
def wstest_script() -> Path:
    try:
        return wstest()
    except AutobahnUnavailable as exc:
        pytest.skip(str(exc))


def serve(tmp: Path, *extra: str) -> tuple[Proc, str]:
    proc = Proc("run", zasgi("run", APP, "--port", "0", "--workers", "1", "--admin-port", "0",
                             "--no-access-log", "--log-level", "warning", *extra), tmp)  # fmt: skip
    try:
        url = proc.wait_for(READY_RUN, 60).group(1)
    except BaseException:
        proc.kill_tree()
        raise
    return proc, url.replace("http://", "ws://")


def fuzz(script: Path, tmp: Path, url: str, cases: list[str], exclude: tuple[str, ...] = ()) -> Run:
    reports = tmp / "reports"
    spec = {"outdir": str(reports), "servers": [{"agent": "zasgi", "url": url}], "cases": cases,
            "exclude-cases": ["9.*", *exclude], "exclude-agent-cases": {}}  # fmt: skip
    (tmp / "fuzzingclient.json").write_text(json.dumps(spec))
    began = time.monotonic()
    with open(tmp / "wstest.log", "w") as log:
        done = subprocess.run([str(script), "-m", "fuzzingclient", "-s", "fuzzingclient.json"], cwd=tmp,
                              stdout=log, stderr=subprocess.STDOUT, timeout=WSTEST_TIMEOUT_S)  # fmt: skip
    took = time.monotonic() - began
    assert done.returncode == 0, (tmp / "wstest.log").read_text()[-3000:]
    results = json.loads((reports / "index.json").read_text())["zasgi"]
    return Run(results, reports, took)


def summary(name: str, run: Run) -> str:
    counts: dict[str, int] = {}
    for r in run.results.values():
        counts[r["behavior"]] = counts.get(r["behavior"], 0) + 1
    return f"autobahn {name}: {len(run.results)} cases in {run.seconds:.0f}s: {counts}"


@pytest.fixture(scope="module", params=["deflate", "plain"])
def run(
    request: pytest.FixtureRequest, wstest_script: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp(f"autobahn-{request.param}")
    deflate = request.param == "deflate"
    proc, url = serve(tmp, *(() if deflate else ("--no-ws-per-message-deflate",)))
    try:
        full = os.environ.get("ZASGI_AUTOBAHN_FULL") == "1"
        cases = (CASES_DEFLATE_FULL if full else CASES_DEFLATE) if deflate else CASES_PLAIN
        result = fuzz(wstest_script, tmp, url, cases, exclude=("6.4.*",) if deflate and not full else ())
        print(summary(request.param, result))
        yield result
    finally:
        proc.kill_tree()
    assert "Traceback" not in proc.log(), proc.log()[-3000:]


@pytest.mark.parametrize("group", [*GROUPS, "12", "13"])
def test_every_case_of_the_group_passes(run: Run, group: str, request: pytest.FixtureRequest) -> None:
    cases = run.group(group)
    if not cases:
        assert group in ("12", "13") and "plain" in request.node.callspec.id, f"no case of group {group} ran"
        return  # compression cases need the extension: only the deflate run has them
    assert not run.bad(group), run.bad(group)


def test_7_9_5_a_close_frame_with_1006_fails_the_connection(run: Run) -> None:
    """The reserved code in a close frame is a protocol error: 1002, not an echo of it."""
    case = run.results["7.9.5"]
    report = json.loads((run.reports / case["reportfile"]).read_text())
    assert (case["behavior"], report["remoteCloseCode"]) == ("OK", 1002)


def test_deflate_is_negotiated(run: Run, request: pytest.FixtureRequest) -> None:
    case = run.results.get("12.1.1")
    if "plain" in request.node.callspec.id:
        assert case is None
        return
    assert case is not None
    report = json.loads((run.reports / case["reportfile"]).read_text())
    offer = report["httpRequest"].lower()
    answer = report["httpResponse"].lower()
    assert "sec-websocket-extensions: permessage-deflate" in offer
    assert "sec-websocket-extensions: permessage-deflate" in answer, report["httpResponse"]


def test_fragmented_messages_come_back_whole(tmp_path: Path) -> None:
    """Text and binary messages in several fragments, a ping between two of them: echoed whole."""
    proc, url = serve(tmp_path, "--no-ws-per-message-deflate")
    try:
        host, port = url.removeprefix("ws://").rsplit(":", 1)
        asyncio.run(_fragments(host, int(port)))
    finally:
        proc.kill_tree()


async def _fragments(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(HANDSHAKE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 101"), head
        text = "héllo, fragmented wörld " * 300
        data = text.encode()
        pieces = [data[:7], data[7:4000], data[4000:]]  # the first cut splits "é" across fragments
        writer.write(_frame(0x1, pieces[0], fin=False) + _frame(0x9, b"ping!", fin=True)
                     + _frame(0x0, pieces[1], fin=False) + _frame(0x0, pieces[2], fin=True))  # fmt: skip
        blob = os.urandom(70_000)
        writer.write(b"".join(_frame(0x2 if i == 0 else 0x0, blob[i:i + 10_000], fin=i + 10_000 >= len(blob))
                              for i in range(0, len(blob), 10_000)))  # fmt: skip
        await writer.drain()
        got = []
        while len(got) < 3:
            opcode, payload = await asyncio.wait_for(_read_frame(reader), 30)
            got.append((opcode, payload))
        assert got[0] == (0xA, b"ping!")  # the pong, between the fragments' arrival and the echo
        assert got[1] == (0x1, data)
        assert got[2] == (0x2, blob)
        writer.write(_frame(0x8, (1000).to_bytes(2, "big"), fin=True))
        await writer.drain()
        opcode, payload = await asyncio.wait_for(_read_frame(reader), 30)
        assert (opcode, payload[:2]) == (0x8, (1000).to_bytes(2, "big"))
    finally:
        writer.close()


def _frame(opcode: int, payload: bytes, *, fin: bool) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next control frame, or the next whole message (fragments joined): (opcode, payload)."""
    opcode, parts = None, []
    while True:
        b0, b1 = await reader.readexactly(2)
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(n)
        kind = b0 & 0x0F
        if kind >= 0x8:
            return kind, payload
        opcode = kind if opcode is None else opcode
        parts.append(payload)
        if b0 & 0x80:
            return opcode, b"".join(parts)
