"""Reading a state that is still converging: poll it, with a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(read: Callable[[], Awaitable[T]], accept: Callable[[T], object], within_s: float = 10.0) -> T:
    """`read()` again until `accept` takes what it returns (e.g. an answer's log row written after it was sent);
    the last value read once `within_s` passed (the caller's assertion then says what was missing)."""
    deadline = time.monotonic() + within_s
    while True:
        value = await read()
        if accept(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)
