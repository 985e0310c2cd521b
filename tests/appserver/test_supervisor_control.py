"""The supervisor's control plane without processes: exit wording, back-off, jitter, roll plan, pid file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appserver.control import (
    PidFile,
    PidFileError,
    RollPlan,
    describe_exit,
    request_limit,
    restart_delay,
    running_pid,
    send_reload,
)

# ---------------------------------------------------------------- wording and numbers


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited with code 0"),
        (1, "exited with code 1"),
        (3, "exited with code 3 (boot error)"),
        (4, "exited with code 4 (app could not be loaded)"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
        (-200, "killed by signal 200"),
        (None, "is still running"),
    ],
)
def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text


def test_restart_delay_backs_off_and_is_capped() -> None:
    delays = [restart_delay(n) for n in range(8)]
    assert delays[0] == 0.0
    assert delays[1:4] == [1.0, 2.0, 4.0]
    assert delays == sorted(delays) and max(delays) == 10.0


def test_request_limit_is_within_jitter_bounds() -> None:
    rng = random.Random(7)
    limits = {request_limit(100, 10, rng) for _ in range(2000)}
    assert limits == set(range(100, 111))  # both ends reachable, nothing outside
    assert request_limit(100, 0, rng) == 100
    assert request_limit(0, 50, rng) == 0  # off, whatever the jitter


# ---------------------------------------------------------------- roll plan


def test_roll_goes_in_batches_of_max_surge() -> None:
    plan = RollPlan(range(5), max_surge=2)
    everyone = set(range(5))
    assert plan.take_batch(everyone) == [0, 1]
    assert plan.take_batch(everyone) == []  # a batch is in flight
    plan.replaced_one(0)
    assert plan.take_batch(everyone) == []  # ... until all of it is replaced
    plan.replaced_one(1)
    assert plan.take_batch(everyone) == [2, 3]
    plan.replaced_one(2)
    plan.replaced_one(3)
    assert plan.take_batch(everyone) == [4]
    assert not plan.done
    plan.replaced_one(4)
    assert plan.take_batch(everyone) == [] and plan.done
    assert plan.replaced == 5


def test_roll_skips_busy_slots_until_they_are_available() -> None:
    plan = RollPlan([0, 1, 2], max_surge=2)
    assert plan.take_batch({1}) == [1]  # 0 and 2 are being recycled right now
    plan.replaced_one(1)
    assert plan.take_batch(set()) == []
    assert not plan.done
    assert plan.take_batch({0, 2}) == [0, 2]


def test_reload_during_roll_starts_over_after_the_current_batch() -> None:
    plan = RollPlan([0, 1, 2], max_surge=1)
    assert plan.take_batch({0, 1, 2}) == [0]
    plan.restart([0, 1, 2])
    assert plan.take_batch({1, 2}) == []  # batch [0] still in flight
    plan.replaced_one(0)
    assert not plan.done
    for index in (0, 1, 2):  # from the top again
        assert plan.take_batch({0, 1, 2}) == [index]
        plan.replaced_one(index)
    assert plan.done and plan.replaced == 4


def test_roll_forgets_a_removed_slot() -> None:
    plan = RollPlan([0, 1, 2], max_surge=1)
    assert plan.take_batch({0, 1, 2}) == [0]
    plan.restart([0, 1, 2])
    plan.drop(2)
    plan.replaced_one(0)
    assert plan.take_batch({0, 1}) == [0]  # the restart, without 2
    plan.replaced_one(0)
    assert plan.take_batch({0, 1}) == [1]
    plan.drop(1)  # the one in flight
    assert plan.done


def test_roll_is_done_when_every_slot_left() -> None:
    plan = RollPlan([0, 1], max_surge=1)
    assert plan.take_batch({0, 1}) == [0]
    plan.drop(1)
    plan.drop(0)
    assert plan.done and plan.replaced == 0


def test_roll_needs_a_surge() -> None:
    with pytest.raises(ValueError):
        RollPlan([0], max_surge=0)


# ---------------------------------------------------------------- pid file


def test_pid_file_written_locked_and_removed(tmp_path: Path) -> None:
    path = str(tmp_path / "zasgi.pid")
    pid_file = PidFile(path)
    pid_file.acquire()
    try:
        assert Path(path).read_text() == f"{os.getpid()}\n"
        assert running_pid(path) == os.getpid()
        with pytest.raises(PidFileError, match=f"held by a running zasgi \\(pid {os.getpid()}\\)"):
            PidFile(path).acquire()
    finally:
        pid_file.release()
    assert not Path(path).exists()
    pid_file.release()  # twice is harmless


def test_release_leaves_a_file_that_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "zasgi.pid"
    pid_file = PidFile(str(path))
    pid_file.acquire()
    path.unlink()
    path.write_text("12345\n")  # someone else's now
    pid_file.release()
    assert path.read_text() == "12345\n"


def test_stale_pid_file_is_refused(tmp_path: Path) -> None:
    """Written by a process that is gone (no lock held): never signal that pid."""
    path = tmp_path / "zasgi.pid"
    code = f"from appserver.control import PidFile; PidFile({str(path)!r}).acquire()"  # exits without release
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert path.read_text().strip().isdigit()
    with pytest.raises(PidFileError, match="stale pid file"):
        running_pid(str(path))
    with pytest.raises(PidFileError, match="stale pid file"):
        send_reload(str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no pid file at"), ("", "does not hold a process id"), ("abc\n", "does not hold a process id"),
     ("0\n", "does not hold a process id")],
)  # fmt: skip
def test_bad_pid_file_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "zasgi.pid"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PidFileError, match=message) as info:
        running_pid(str(path))
    assert "\n" not in str(info.value)


def test_unwritable_pid_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PidFileError, match="cannot write pid file .*No such file or directory"):
        PidFile(str(tmp_path / "missing" / "zasgi.pid")).acquire()


def test_send_reload_signals_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "zasgi.pid"
    code = (
        "import signal, sys, time\n"
        "from appserver.control import PidFile\n"
        "got = []\n"
        "signal.signal(signal.SIGHUP, lambda *a: got.append(1))\n"
        f"PidFile({str(path)!r}).acquire()\n"
        "print('ready', flush=True)\n"
        "deadline = time.monotonic() + 30\n"
        "while not got and time.monotonic() < deadline: time.sleep(0.01)\n"
        "sys.exit(0 if got else 1)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as child:
        try:  # (the with block closes its stdout pipe: a collected open one is an unraisable warning)
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            assert send_reload(str(path)) == child.pid
            assert child.wait(timeout=30) == 0
        finally:
            child.kill()
            child.wait()
