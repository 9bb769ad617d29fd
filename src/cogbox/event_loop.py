"""The event loop of cogbox's long-running processes (`cogbox serve`, `cogbox agent`).

uvloop (libuv under asyncio's own API): every execution crosses both processes' loops
several times (WebSocket frames in and out, the kernel's sockets, timers), and the loop's
own bookkeeping was a large share of their CPU on asyncio's pure-Python selector loop
(benchmarks/peer_gateway.py measures the two side by side, see its results).
"""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    """A fresh event loop of the kind the service's processes run on."""
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on that loop."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
