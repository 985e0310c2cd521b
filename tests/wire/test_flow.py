"""Credit accounting (PROTOCOL.md §7)."""

from __future__ import annotations

import pytest

from wire import events as ev
from wire.errors import ProtocolViolation
from wire.flow import WS_MESSAGE_OVERHEAD_BYTES, ReceiveWindow, SendWindow, cost


def test_cost_counts_payload_bytes_and_a_per_message_charge() -> None:
    assert cost(ev.Body(1, b"abc", True)) == 3
    assert cost(ev.Response(1, 200, (), b"12345", True, False)) == 5
    assert cost(ev.WsMessage(1, False, b"")) == WS_MESSAGE_OVERHEAD_BYTES
    assert cost(ev.Credit(1, 10)) == 0
    assert cost(ev.Body(1, b"", False)) == 0


def test_send_window_may_overshoot_by_one_event_then_closes() -> None:
    window = SendWindow(100)
    assert window.open
    window.spend(64)
    assert window.open
    window.spend(64)  # allowed: the window was positive when sending
    assert not window.open and window.available == -28
    window.grant(28)
    assert not window.open
    window.grant(1)
    assert window.open


def test_receive_window_batches_credit_at_half_the_window() -> None:
    window = ReceiveWindow(100, slack_bytes=64)
    window.received(60)
    assert window.consumed(30) == 0
    assert window.consumed(20) == 50  # half the window consumed: credit goes back
    assert window.outstanding == 10
    assert window.flush() == 0
    window.consumed(10)
    assert window.flush() == 10


def test_receive_window_rejects_a_peer_that_ignores_credit() -> None:
    window = ReceiveWindow(100, slack_bytes=64)
    window.received(164)
    with pytest.raises(ProtocolViolation) as info:
        window.received(1, stream_id=9)
    assert info.value.stream_id == 9


def test_credit_returned_lets_the_peer_send_more() -> None:
    window = ReceiveWindow(100, slack_bytes=30)  # slack: one event's overshoot (Rule 16)
    sender = SendWindow(100)
    sent = 0
    for _ in range(50):  # a long transfer stays within bounds at every step
        while sender.open:
            sender.spend(30)
            window.received(30)
            sent += 30
        sender.grant(window.consumed(window.outstanding))
    assert sent > 1000


def test_expect_continue_window_starts_closed_until_granted() -> None:
    window = ReceiveWindow(0, slack_bytes=0)
    with pytest.raises(ProtocolViolation):
        window.received(1)
    window = ReceiveWindow(0, slack_bytes=0)
    assert window.grant(1000) == 1000
    window.received(1000)
    assert window.consumed(400) == 0
    assert window.consumed(100) == 500
