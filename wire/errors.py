"""Exceptions of the wire layer.

    WireError
    ├── DecodeError        a message could not be read at all
    └── ProtocolViolation  a readable event that is illegal where it arrived
                           (wrong stream state, credit overrun, ...)

The sans-IO core raises only these for bad peer input; the I/O layers
catch them, log one line, and reset the stream or drop the peer.
"""

from __future__ import annotations


class WireError(Exception):
    pass


class DecodeError(WireError):
    pass


class ProtocolViolation(WireError):
    def __init__(self, message: str, *, stream_id: int = 0) -> None:
        super().__init__(message)
        self.stream_id = stream_id
