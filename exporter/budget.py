"""Request budgets, one per API key: every request made with a key takes a token from its bucket.

The upstream limits a key, not a source, so the key is what must be paced:

- **A token bucket** refilled at the key's rate (``api.requests_per_minute``, or a project's own),
  holding :data:`BURST_SECONDS` of it. A poll waits for a token rather than fail.
- **A 429 holds the whole key**: no request with it until ``Retry-After`` (or, without one, an
  exponential backoff) has passed, whichever source asked.
- **The rate adapts** (additive increase, multiplicative decrease): a 429 sets the key's ceiling
  just under what the upstream accepted in its window (``api.rate_window_seconds``, a minute)
  before it, and drops the rate to
  :data:`DECREASE` of that; each quiet minute adds :data:`INCREASE` of the ceiling back. A key
  thus settles just under its real limit instead of finding it again and again. A learned
  ceiling is raised by :data:`PROBE_STEP` after :data:`PROBE_AFTER_SECONDS` without a 429, so a
  raised limit is found too. A key with no configured rate has no ceiling until its first 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

DECREASE = 0.7
INCREASE = 0.05  # of the ceiling, per minute without a 429
MARGIN = 0.95  # the learned ceiling, as a share of what the upstream accepted in a minute
PROBE_AFTER_SECONDS = 1800.0
PROBE_STEP = 1.05
BURST_SECONDS = 5.0
MIN_RATE = 1.0  # requests a minute: a key is never paced to a standstill
BACKOFF_SECONDS = 1.0  # the hold after a 429 without Retry-After, doubled per 429 in a row
MAX_BACKOFF_SECONDS = 60.0
DEFAULT = "default"


class KeyHeld(Exception):
    """The key is held (after a 429) for longer than the caller will wait."""

    def __init__(self, key: str, seconds: float) -> None:
        super().__init__(f"API key {key!r} is held for {seconds:.0f}s after a 429")
        self.seconds = seconds


@dataclass
class KeyBudget:
    """The pacing of one API key. ``name`` is bounded (a project name, or "default"): it is a
    metric label, and never the key itself."""

    name: str
    configured: float | None  # requests a minute from the config; None: no limit set
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    window: float = 60.0  # seconds over which the upstream counts a key's requests
    requests: Counter[str] = field(default_factory=Counter)  # by HTTP status, or "error"
    wait_seconds: float = 0.0
    ceiling: float | None = field(init=False)
    rate: float | None = field(init=False)  # tokens a minute now; None: unlimited
    hold_until: float = field(init=False, default=0.0)
    held_since: float | None = field(init=False, default=None)  # when the last 429 came

    def __post_init__(self) -> None:
        self.ceiling = self.rate = self.configured
        self._tokens = self._capacity()
        self._stamp = self.clock()
        self._last_429: float | None = None
        self._in_a_row = 0
        self._accepted: deque[float] = deque()
        self._queue = asyncio.Lock()  # waiters take tokens in the order they came

    def _capacity(self) -> float:
        return max(1.0, (self.rate or 0.0) * BURST_SECONDS / 60)

    async def take(self, max_hold: float = float("inf")) -> None:
        """Wait for a token. Raises :class:`KeyHeld` instead of waiting out a hold longer than
        ``max_hold`` seconds."""
        started = self.clock()
        try:
            async with self._queue:
                while True:
                    now = self.clock()
                    if now < self.hold_until:
                        if self.hold_until - now > max_hold:
                            raise KeyHeld(self.name, self.hold_until - now)
                        await self.sleep(self.hold_until - now)
                        continue
                    self._refill(now)
                    if self.rate is None:
                        return
                    if self._tokens >= 1 - 1e-9:  # a float sum of refills may fall just short
                        self._tokens = max(0.0, self._tokens - 1)
                        return
                    # At least a millisecond: a shorter sleep may not move a float clock at all.
                    await self.sleep(max(0.001, (1 - self._tokens) * 60 / self.rate))
        finally:
            self.wait_seconds += self.clock() - started

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        quiet = self._last_429 is None or now - self._last_429 >= PROBE_AFTER_SECONDS
        learned = self.ceiling is not None and self.ceiling != self.configured
        if learned and quiet and self._last_429 is not None:
            assert self.ceiling is not None
            self.ceiling *= PROBE_STEP
            if self.configured is not None:
                self.ceiling = min(self.ceiling, self.configured)
            self._last_429 = now  # the next step after another quiet stretch
        if self.rate is None or self.ceiling is None:
            return
        if self.rate < self.ceiling:
            self.rate = min(self.ceiling, self.rate + self.ceiling * INCREASE * elapsed / 60)
        self._tokens = min(self._capacity(), self._tokens + elapsed * self.rate / 60)

    def answered(self, status: int | None, retry_after: float | None = None) -> None:
        """Count an answer (``status`` None: no answer at all); a 429 holds and slows the key."""
        now = self.clock()
        self.requests[str(status) if status is not None else "error"] += 1
        while self._accepted and self._accepted[0] <= now - self.window:
            self._accepted.popleft()
        if status != 429:
            if status is not None:
                self._accepted.append(now)
                self._in_a_row = 0
            return
        self._in_a_row += 1
        self._last_429 = now
        hold = retry_after
        if hold is None:
            hold = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** (self._in_a_row - 1))
        self.hold_until = max(self.hold_until, now + hold)
        self.held_since = now
        # Within its window the upstream took this many and refused the next: its limit.
        accepted = max(MIN_RATE, len(self._accepted) * MARGIN * 60 / self.window)
        self.ceiling = accepted if self.ceiling is None else min(self.ceiling, accepted)
        self.rate = max(MIN_RATE, min(self.rate or self.ceiling, self.ceiling) * DECREASE)
        self._tokens = 0.0
        self._stamp = now


class Budgets:
    """Every key's budget, found by the key's value (which never leaves this object)."""

    def __init__(
        self,
        default_per_minute: float | None = None,
        default_key: str | None = None,
        own: Iterable[tuple[str, str, float | None]] = (),
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``own``: (project name, its key, requests a minute) for projects with a key of their
        own; any other key (``default_key`` among them) shares the default budget."""
        self.default = KeyBudget(DEFAULT, default_per_minute, clock, sleep, window=window)
        self._by_key: dict[str, KeyBudget] = {}
        for name, key, per_minute in own:
            if key != default_key and key not in self._by_key:
                self._by_key[key] = KeyBudget(name, per_minute, clock, sleep, window=window)

    def __repr__(self) -> str:
        return f"Budgets({', '.join(b.name for b in self.all())})"

    def for_key(self, key: str) -> KeyBudget:
        return self._by_key.get(key, self.default)

    def all(self) -> list[KeyBudget]:
        return [self.default, *sorted(self._by_key.values(), key=lambda b: b.name)]
