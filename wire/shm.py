"""Bodies through shared memory between a worker and a front end on one host (PROTOCOL.md §7.2,
feature "shm-body"): response bodies in the worker's segment, request bodies in the front end's.

Why: a 10 MiB download through ZeroMQ's ipc socket costs both processes' I/O
threads two kernel copies and their wake-ups, ~340 µs of CPU per MiB (more than
the front end's own write to the client, tests/benchmarks/README.md). Here the
worker copies a large body once into a slot of a file both processes map, and
the event carries only ``[slot, length]``; the front end writes the client
straight from its mapping and frees the slot when nothing refers to the bytes
any more.

* ``Writer`` (the worker): creates the file (in /dev/shm, mode 0600, a random
  name), offers it in HELLO; ``put`` copies a payload into a free slot, or
  returns None (no free slot, too large: the payload goes in a frame as before);
  ``release`` frees what the front end says it is done with (FREED).
* ``Reader`` (the front end): maps the file named in HELLO (a front end on
  another host, in another container or under another user cannot: no
  "shm-body" in WELCOME, frames as before); ``view`` gives the bytes of a slot
  as a memoryview and notices, by a weak reference to the buffer the view
  exports, when the last reference to them is gone (written by the transport,
  copied, dropped) -- then the slot goes into ``freed`` and ``on_freed`` is
  called once until the owner takes them (``take_freed``).

The front end's segment for request bodies (SHARE) works the same way round, with
a Writer not ``granted`` any slot until the worker's first FREED (it mapped the
file) and a Reader that ``copy``s for the app and frees at once.

A slot is the writer's again only after FREED names it; a front end that holds
a slot forever costs the worker that slot, never a wrong byte. Each HELLO
offers a new file, so nothing of an earlier session is ever reused. The file is
unlinked as soon as the front end has mapped it (by whichever side gets there
first), and both sides' mappings live until their last view is gone. A process
killed before its peer mapped its file leaves it behind: the file's name
carries the creator's pid (and pid namespace), and whoever reaps that process
``sweep``s them.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import secrets
import weakref
from collections.abc import Callable
from typing import Any

SLOT_BYTES = 1024 * 1024  # the app server's largest response chunk (appserver.stream.RESPONSE_CHUNK_BYTES)
# Per worker and front end: a 2 MiB response window each for 4 streams at full speed; the 8 MiB
# are reserved at the handshake (see Writer.create), so they are memory a worker holds.
SLOTS = 8
# Smaller payloads stay in the message: a frame of less than this costs less than a slot's round trip.
MIN_BYTES = 64 * 1024
# The front end's segment for request bodies (SHARE): slots of one read from the client (uvloop
# reads up to 256 KiB: a 50 MiB upload's BODY events are 256,000 bytes), 2 MiB, a 1 MiB request
# window each for 2 streams at full speed; every payload that would travel in a frame (over
# codec.INLINE_MAX_BYTES) goes in a slot.
UPLOAD_SLOTS = 8
UPLOAD_SLOT_BYTES = 256 * 1024
UPLOAD_MIN_BYTES = 16 * 1024 + 1
DIRECTORY = "/dev/shm"


class Shared:
    """A payload in slot ``slot`` of the sender's segment, ``length`` bytes: encoded as [slot, length]."""

    __slots__ = ("slot", "length")

    def __init__(self, slot: int, length: int) -> None:
        self.slot = slot
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"Shared(slot={self.slot}, length={self.length})"


class Parts:
    """A payload still in the pieces the app sent (bytes each), joined only where it lands: each
    piece straight into a slot (``Writer.put``), or once when encoded into a frame (``joined``).
    A download's 64 KiB sends were joined into 1 MiB and then copied into the slot: two copies
    of every byte, 47% of the worker's CPU (perf, tests/benchmarks/README.md "Session 8")."""

    __slots__ = ("parts", "length")

    def __init__(self, parts: list[bytes], length: int) -> None:
        self.parts = parts
        self.length = length

    def __len__(self) -> int:
        return self.length

    def joined(self) -> bytes:
        return b"".join(self.parts)

    def __eq__(self, other: object) -> bool:  # the bytes it stands for (events compare by value)
        if isinstance(other, Parts):
            other = other.joined()
        return isinstance(other, (bytes, bytearray, memoryview)) and self.joined() == other

    __hash__ = None  # type: ignore[assignment]  # as bytearray: equal to bytes, so unhashable

    def __repr__(self) -> str:
        return f"Parts({len(self.parts)} pieces, length={self.length})"


def joinable(pieces: list[Any], length: int) -> Any:
    """``pieces`` as one payload: ``Parts`` when every piece is bytes (immutable: safe to copy
    later), else joined now (a bytearray the app may reuse once ``send`` returned)."""
    for piece in pieces:
        if type(piece) is not bytes:
            return b"".join(pieces)
    return Parts(pieces, length)


def offer(path: str, slots: int, slot_bytes: int) -> dict[str, Any]:
    """What HELLO.info["shm"] says of a segment."""
    return {"path": path, "slots": slots, "slot_bytes": slot_bytes}


class Writer:
    """The worker's side of one segment (one front end, one HELLO)."""

    def __init__(
        self, path: str, fd: int, slots: int, slot_bytes: int, min_bytes: int, granted: bool
    ) -> None:
        self.path = path
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.min_bytes = min_bytes  # smaller payloads stay in the message
        self._map = mmap.mmap(fd, slots * slot_bytes)
        os.close(fd)
        self._view = memoryview(self._map)
        # Not granted: every slot counts as the reader's until its first FREED hands them over
        # (the front end's segment: the worker says so once it has mapped it).
        self._free = list(range(slots - 1, -1, -1)) if granted else []  # pop() takes slot 0 first
        self._used = bytearray(slots) if granted else bytearray(b"\1" * slots)

    @classmethod
    def create(
        cls, directory: str = DIRECTORY, slots: int = SLOTS, slot_bytes: int = SLOT_BYTES,
        min_bytes: int = MIN_BYTES, granted: bool = True,
    ) -> Writer | None:
        """A new segment, or None where shared memory is not to be had (no such directory, full).
        ``granted`` False: no slot is usable until the reader frees them (``release``)."""
        path = os.path.join(directory, prefix(os.getpid()) + secrets.token_hex(16))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None
        try:
            # Reserve the pages now: a write into a page tmpfs cannot supply (a container's small
            # /dev/shm) would kill the worker with SIGBUS; here it is one "no shared memory".
            os.posix_fallocate(fd, 0, slots * slot_bytes)
            return cls(path, fd, slots, slot_bytes, min_bytes, granted)
        except (OSError, ValueError):
            os.close(fd)
            unlink(path)
            return None

    @property
    def offer(self) -> dict[str, Any]:
        return offer(self.path, self.slots, self.slot_bytes)

    @property
    def free(self) -> int:
        return len(self._free)

    def put(self, payload: Any) -> Shared | None:
        """``payload`` copied into a free slot, or None (none free, or too large for one)."""
        n = len(payload)
        free = self._free
        if not free or n > self.slot_bytes or n == 0:
            return None
        slot = free.pop()
        self._used[slot] = 1
        start = slot * self.slot_bytes
        if type(payload) is Parts:
            view = self._view
            for piece in payload.parts:
                end = start + len(piece)
                view[start:end] = piece
                start = end
        else:
            self._view[start : start + n] = payload
        return Shared(slot, n)

    def release(self, slots: tuple[int, ...]) -> int:
        """Free what the front end is done with; the number of slots named that were not in use
        (a confused peer: ignored, so a slot is never handed out twice)."""
        bad = 0
        used = self._used
        for slot in slots:
            if 0 <= slot < self.slots and used[slot]:
                used[slot] = 0
                self._free.append(slot)
            else:
                bad += 1
        return bad

    def unlink(self) -> None:
        unlink(self.path)

    def close(self) -> None:
        """Unmap (the front end's mapping lives on) and remove the file if still there."""
        self.unlink()
        self._free.clear()
        self._view.release()
        try:
            self._map.close()
        except BufferError:  # a payload view still exported: the mapping goes with it
            pass


class Reader:
    """The front end's side of one worker's segment."""

    def __init__(self, mapping: mmap.mmap, slots: int, slot_bytes: int, copy: bool = False) -> None:
        self.slots = slots
        self.copy = copy  # ``view`` returns bytes, freeing the slot at once (ASGI apps want bytes)
        self.slot_bytes = slot_bytes
        self._map = mapping
        self._held = bytearray(slots)
        self._refs: dict[int, weakref.ref[Any]] = {}
        self.freed: list[int] = []
        self.on_freed: Callable[[], Any] | None = None  # called when ``freed`` stops being empty
        self.closed = False

    @classmethod
    def open(cls, info: Any, copy: bool = False) -> Reader | None:
        """Map the segment HELLO.info["shm"] offers; None if it cannot be (another host, another
        user, not a segment of ours): the worker then sends its bodies in frames."""
        if type(info) is not dict:
            return None
        path, slots, slot_bytes = info.get("path"), info.get("slots"), info.get("slot_bytes")
        if (
            type(path) is not str or type(slots) is not int or type(slot_bytes) is not int
            or not 1 <= slots <= 1024 or not 1 <= slot_bytes <= 64 * 1024 * 1024
            or os.path.dirname(path) != DIRECTORY or not os.path.basename(path).startswith("zasgi-")
        ):  # fmt: skip
            return None
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size != slots * slot_bytes:
                return None
            mapping = mmap.mmap(fd, slots * slot_bytes)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        unlink(path)  # mapped: the name is no longer needed
        return cls(mapping, slots, slot_bytes, copy)

    def view(self, slot: int, length: int) -> Any:
        """The bytes of ``slot`` (its first ``length``): a memoryview, or bytes with ``copy``.
        ValueError: not a slot the writer may use now."""
        if not 0 <= slot < self.slots:
            raise ValueError(f"shared slot {slot} does not exist")
        if not 1 <= length <= self.slot_bytes:
            raise ValueError(f"shared payload of {length} bytes does not fit a slot")
        if self._held[slot]:
            raise ValueError(f"shared slot {slot} is still in use")
        if self.copy:
            start = slot * self.slot_bytes
            data = self._map[start : start + length]
            self._done(slot)
            return data
        # A ctypes array over the slot exports the buffer: every view and slice of it keeps the
        # array alive, so its weak reference dies exactly when the last of them does.
        array = (ctypes.c_char * length).from_buffer(self._map, slot * self.slot_bytes)
        self._held[slot] = 1
        self._refs[slot] = weakref.ref(array, lambda _, slot=slot: self._done(slot))  # type: ignore[misc]
        return memoryview(array).cast("B")

    @property
    def held(self) -> int:
        return sum(self._held)

    def _done(self, slot: int) -> None:
        # Runs wherever the last reference went (inside a transport's write, a decref...): only
        # bookkeeping here; the owner posts FREED from the loop (on_freed schedules it).
        self._held[slot] = 0
        self._refs.pop(slot, None)
        if self.closed:
            return
        self.freed.append(slot)
        if len(self.freed) == 1 and self.on_freed is not None:
            self.on_freed()

    def take_freed(self) -> tuple[int, ...]:
        freed, self.freed = self.freed, []
        return tuple(freed)

    def close(self) -> None:
        """The worker is gone: forget the slots (views still out keep the mapping alive)."""
        self.closed = True
        self.on_freed = None


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


# Containers that share one /dev/shm (one IPC namespace) each have their own pids: a name carries
# the pid namespace too, so a sweep never takes another container's file.
_PID_NS = _pid_namespace()


def prefix(pid: int) -> str:
    """How the names of the segments process ``pid`` (of this pid namespace) creates begin."""
    return f"zasgi-{_PID_NS}-{pid}-"


def sweep(pid: int, directory: str | None = None) -> int:
    """Unlink the segments process ``pid`` created that no peer mapped (it died between creating
    one and the other side's mapping, which unlinks it): its reaper calls this. How many."""
    directory = directory or DIRECTORY
    start = prefix(pid)
    try:
        names = [n for n in os.listdir(directory) if n.startswith(start)]
    except OSError:
        return 0
    for name in names:
        unlink(os.path.join(directory, name))
    return len(names)


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
