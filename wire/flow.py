"""Per-stream credit accounting (PROTOCOL.md §7), one object per direction.

``SendWindow`` is held by the sender of a direction and says whether it may
send; ``ReceiveWindow`` by the receiver, which checks the peer keeps to its
window and decides when consumed bytes go back as ``CREDIT``. Neither does
I/O: callers ask and act.
"""

from __future__ import annotations

from typing import Any

from mypy_extensions import mypyc_attr

from . import events as ev
from .errors import ProtocolViolation
from .event_classes import BODY_CLS, REQUEST_CLS, RESPONSE_CLS, WS_MESSAGE_CLS

WS_MESSAGE_OVERHEAD_BYTES = 32  # Rule 15: empty messages are not free


def cost(event: Any) -> int:
    """Window cost of an event (Rule 15); 0 for events never held back."""
    kind = type(event)
    if kind is BODY_CLS or kind is RESPONSE_CLS or kind is REQUEST_CLS:
        return len(event.body)
    if kind is WS_MESSAGE_CLS:
        return len(event.data) + WS_MESSAGE_OVERHEAD_BYTES
    return 0


# Compiled (wire/compiled.py), and subclassed by the app server's CreditGate.
@mypyc_attr(allow_interpreted_subclasses=True)
class SendWindow:
    __slots__ = ("available",)

    def __init__(self, initial_bytes: int) -> None:
        self.available = initial_bytes

    @property
    def open(self) -> bool:
        return self.available > 0

    def spend(self, n: int) -> None:
        self.available -= n

    def grant(self, n: int) -> None:
        self.available += n


class ReceiveWindow:
    """What the peer may still send, and the credit we owe it back.

    ``outstanding`` is bytes received but not yet credited back; the peer may
    push it to ``initial + slack`` at most (Rule 16's one-event overrun).
    """

    __slots__ = ("initial", "slack", "outstanding", "unreturned", "granted")

    def __init__(self, initial_bytes: int, slack_bytes: int) -> None:
        self.initial = initial_bytes
        self.slack = slack_bytes
        self.granted = initial_bytes  # peer's window as we last set it, plus credit sent
        self.outstanding = 0
        self.unreturned = 0  # consumed, not yet credited

    def received(self, n: int, stream_id: int = 0) -> None:
        self.outstanding += n
        if self.outstanding > self.granted + self.slack:
            raise ProtocolViolation(
                f"peer sent {self.outstanding} bytes on a window of {self.granted}",
                stream_id=stream_id,
            )

    def consumed(self, n: int) -> int:
        """Record ``n`` bytes consumed; return credit to send now (0: not yet, batching)."""
        self.unreturned += n
        if self.unreturned * 2 >= max(self.granted, 1):
            return self.flush()
        return 0

    def flush(self) -> int:
        """Credit for everything consumed so far (when the consumer goes idle)."""
        n, self.unreturned = self.unreturned, 0
        self.outstanding -= n
        return n

    def grant(self, n: int) -> int:
        """Open the window by ``n`` beyond what was consumed (Rule 18's first credit)."""
        self.granted += n
        return n
