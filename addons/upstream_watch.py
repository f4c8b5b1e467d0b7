"""The deadlines of one forwarded request, and how a stream callable notes its progress.

`UpstreamBounds` (addons/upstream_bounds.py) keeps one `UpstreamWatch` per single-route request
(`flow.metadata[WATCH_KEY]`) and times it out; the stream callables the gateway sets on an answer
note their progress in it themselves, so the per-chunk path has no wrapper for it: Translate's
translator and Meter's pass-through each keep a count of chunks the timer looks at
(`counted_watch`). A module of its own because Meter and Translate, which
UpstreamBounds itself imports, need it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from mitmproxy import http

WATCH_KEY = "codexgate.upstream_watch"


@dataclasses.dataclass(eq=False)
class UpstreamWatch:
    """The deadlines of one forwarded request. One timer, scheduled once: it fires at the connect
    deadline and, if the request is still going, sleeps until the next one (first byte, then
    idle since the last data, and the total); the stages move on without re-creating it."""

    connect: float
    first_byte: float
    idle: float
    total: float
    started: float
    timer: asyncio.TimerHandle | None = None
    stage: str = "connect"  # connect / first_byte / idle
    last_data: float = 0.0
    # Set when the gateway's own stream callable notes its progress itself (`counted_watch`):
    # StreamWatch then adds no wrapper of its own, a Python call less per chunk.
    noted: bool = False
    # `counted_watch`: the number of chunks so far, looked at by the timer instead of `last_data`
    # being set per chunk; `seen` is what it was at the last look.
    progress: Callable[[], int] | None = None
    seen: int = 0
    done: bool = False

    def __deepcopy__(self, memo: dict[int, object]) -> None:
        return None  # live timers: not part of a saved flow (mitmproxy serializes a deep copy)

    def cancel(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def counted_watch(flow: http.HTTPFlow) -> UpstreamWatch | None:
    """For a stream callable about to be set on `flow.response` that counts its chunks: the watch
    whose `progress` it must set to a function telling that count, or None when nothing watches
    this request. No clock per chunk: the timer looks at the count every quarter of the idle
    timeout and takes a change as data at that moment, so a stall is cut between 1 and 1.25 idle
    timeouts after the last chunk (and a live stream never)."""
    watch = flow.metadata.get(WATCH_KEY)
    if not isinstance(watch, UpstreamWatch) or watch.done:
        return None
    watch.noted = True
    return watch


def loop_clock() -> Callable[[], float]:
    """The running loop's clock; asyncio's own loops tell time.monotonic(): called directly, without
    the method's frame."""
    loop = asyncio.get_running_loop()
    return time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
