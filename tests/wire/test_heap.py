"""wire.heap: glibc malloc settings for large body buffers, and the switch that leaves malloc alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wire import heap


def _tune(env_value: str | None) -> str:
    code = "from wire.heap import tune_malloc; print(tune_malloc())"
    env = {"PATH": "/usr/bin:/bin"} | ({heap.ENV: env_value} if env_value is not None else {})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_applied_on_glibc_and_off_with_the_switch() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _tune(None) == "True"
    assert _tune("0") == "False"


def test_thresholds_keep_a_body_frame_on_the_heap() -> None:
    from appserver.stream import RESPONSE_CHUNK_BYTES
    from wire.channel import BATCH_MAX_PAYLOAD_BYTES

    assert heap.MMAP_THRESHOLD_BYTES > max(RESPONSE_CHUNK_BYTES, BATCH_MAX_PAYLOAD_BYTES)
    assert heap.TRIM_THRESHOLD_BYTES >= heap.MMAP_THRESHOLD_BYTES
