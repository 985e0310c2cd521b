"""The event classes that compiled code tests on every event, as C statics.

``wire.events`` stays interpreted (compiled, its dataclasses build slower from
the interpreted modules that construct them: wire/compiled.py), so ``ev.Body``
in compiled code is a getattr on that module each time (~28 ns). A ``Final``
of a compiled module is a C static, read directly by the other modules of the
group (hot-path rule 8: tests/benchmarks/README.md). Used only where every
event pays: ``flow.cost``, the codec's pack and decode, the channel's batch
split; elsewhere code reads ``ev.Body`` plainly.
"""

from __future__ import annotations

from typing import Final

from . import events as ev

BODY_CLS: Final = ev.Body
REQUEST_CLS: Final = ev.Request
RESPONSE_CLS: Final = ev.Response
WS_MESSAGE_CLS: Final = ev.WsMessage
