"""When to send: the waits the LLM client honours before a request.

- `parse_retry_after`: the seconds a refusing server asks to wait (`retry-after-ms`, `retry-after` as seconds or
  an HTTP date);
- `parse_duration` and `HeaderPacer`: the server's own quota from its `x-ratelimit-remaining-*` and
  `x-ratelimit-reset-*` headers, and holding new requests back while it will not cover them;
- `RateLimiter`: the user's requests/min and tokens/min ceilings over a sliding minute.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import timezone


def _seconds(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None  # NaN fails the comparison too


def parse_retry_after(headers) -> float | None:
    """Seconds the server asks to wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date).

    None when absent or unusable (not a number or a date, negative, NaN, a date in the past): the caller then
    uses its own backoff. Huge values and infinity are returned as they are; the caller caps the wait.
    """
    if headers is None:
        return None
    milliseconds = _seconds(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(str(value).strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" dates come back naive; HTTP dates are UTC
        when = when.replace(tzinfo=timezone.utc)
    delay = when.timestamp() - time.time()
    return delay if delay >= 0 else None


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_DURATION_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text) -> float | None:
    """Seconds in a rate-limit reset header: OpenAI's durations ("20ms", "1s", "6m0s", "1m30.5s", "2h0m0s") or a
    plain number of seconds. None for anything else (empty, negative, unknown unit, stray text, not finite): the
    header is then ignored."""
    if text is None:
        return None
    text = str(text).strip()
    seconds = _seconds(text)
    if seconds is not None:
        return seconds if math.isfinite(seconds) else None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    total = sum(float(number) * _DURATION_UNIT_S[unit] for number, unit in parts)
    return total if math.isfinite(total) else None


def _count(text) -> int | None:
    """A whole number >= 0 from a header, else None."""
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


@dataclass
class _ServerQuota:
    """One of the server's limits (requests or tokens) as the headers of one reply described it."""

    remaining: int
    reset_s: float
    limit: int | None
    # How much of it this client had sent, up to and including the request the reply answered.
    sent: float
    seen_at: float


class HeaderPacer:
    """Holds new requests back while the server's rate-limit headers say its quota will not cover them.

    Every reply with `x-ratelimit-remaining-{requests,tokens}` and `x-ratelimit-reset-{requests,tokens}` (and,
    when sent, `x-ratelimit-limit-*`) updates what is known of each quota; the newest one is the reply to the
    request sent last. Before a request goes out, the quota left is taken as `remaining`, plus what has refilled
    since the reply arrived, less everything the header may not have counted: the requests sent after that one,
    and those sent before it but still in flight when it was answered (the server may have admitted them later).
    When that is less than the request needs, the request waits for the refill: quotas refill steadily (OpenAI's
    and most servers' behaviour), at the rate the headers imply, `(limit - remaining) / reset`, counted one short
    to stay on the safe side; without a `limit` header nothing is assumed to refill until `reset` has passed. A
    request waits at most `max_hold_s`, then goes anyway (a 429 then still gets the usual retry). Headers that do
    not parse are ignored.
    """

    KINDS = ("requests", "tokens")
    # A held request looks again this often: a newer reply may say there is room sooner.
    POLL_S = 0.5

    def __init__(self, max_hold_s: float):
        self.max_hold_s = max_hold_s
        self.sent = {"requests": 0.0, "tokens": 0.0}
        self.quotas: dict[str, _ServerQuota] = {}
        self.holds = 0
        # Requests sent and not answered yet: their ticket's request number -> their tokens.
        self.in_flight: dict[float, float] = {}

    def observe(self, ticket: tuple[float, float], headers, now: float | None = None) -> None:
        """Takes in the rate-limit headers of the reply to the request that `acquire` returned `ticket` for."""
        if headers is None:
            return
        now = time.monotonic() if now is None else now
        older = [tokens for number, tokens in self.in_flight.items() if number < ticket[0]]
        # What the header surely counted: everything sent up to this request, less the older ones still in flight.
        counted = (ticket[0] - len(older), ticket[1] - sum(older))
        for kind, sent in zip(self.KINDS, counted):
            remaining = _count(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset_s = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is None or reset_s is None:
                continue
            known = self.quotas.get(kind)
            if known is not None and known.sent > sent:
                continue  # a reply to an older request: what it says is out of date
            limit = _count(headers.get(f"x-ratelimit-limit-{kind}"))
            self.quotas[kind] = _ServerQuota(remaining, reset_s, limit if limit else None, sent, now)

    def _wait_for(self, kind: str, amount: float, now: float) -> float:
        """Seconds until the quota of `kind` should cover `amount` more; 0 when it does now."""
        quota = self.quotas.get(kind)
        if quota is None:
            return 0.0
        uncounted = self.sent[kind] - quota.sent
        elapsed = now - quota.seen_at
        if quota.limit is None:
            if elapsed >= quota.reset_s:
                return 0.0  # reset since; nothing more is known until the next reply
            return 0.0 if quota.remaining - uncounted >= amount else quota.reset_s - elapsed
        deficit = quota.limit - quota.remaining
        rate = (deficit - 1) / quota.reset_s if quota.reset_s > 0 and deficit > 1 else 0.0
        level = quota.limit if elapsed >= quota.reset_s else min(quota.limit, quota.remaining + rate * elapsed)
        missing = amount - (level - uncounted)
        if missing <= 0:
            return 0.0
        if rate > 0:
            return missing / rate
        return max(quota.reset_s - elapsed, self.POLL_S)

    def wait_time(self, tokens: float, now: float) -> float:
        return max(self._wait_for("requests", 1, now), self._wait_for("tokens", tokens, now))

    async def acquire(self, tokens: float) -> tuple[float, float]:
        """Waits until the known quotas cover one more request of `tokens` tokens (or `max_hold_s` has passed),
        counts it as sent and in flight, and returns its ticket for `observe` and `done`."""
        if self.quotas:
            held_since = None
            while True:
                now = time.monotonic()
                wait = self.wait_time(tokens, now)
                if wait <= 0:
                    break
                if held_since is None:
                    held_since = now
                    self.holds += 1
                left = held_since + self.max_hold_s - now
                if left <= 0:
                    break
                await asyncio.sleep(min(wait, self.POLL_S, left))
        self.sent["requests"] += 1
        self.sent["tokens"] += tokens
        self.in_flight[self.sent["requests"]] = tokens
        return self.sent["requests"], self.sent["tokens"]

    def done(self, ticket: tuple[float, float]) -> None:
        """The request of `ticket` is answered (or failed): no longer in flight."""
        self.in_flight.pop(ticket[0], None)


class RateLimiter:
    """Sliding one-minute window over requests and (estimated) tokens."""

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None):
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.events: deque[tuple[float, int]] = deque()
        self.lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        if self.rpm is None and self.tpm is None:
            return
        while True:
            async with self.lock:
                now = time.monotonic()
                while self.events and self.events[0][0] <= now - 60:
                    self.events.popleft()
                used = sum(t for _, t in self.events)
                fits_rpm = self.rpm is None or len(self.events) < self.rpm
                fits_tpm = self.tpm is None or used + tokens <= self.tpm or not self.events
                if fits_rpm and fits_tpm:
                    self.events.append((now, tokens))
                    return
                wait = self.events[0][0] + 60 - now
            await asyncio.sleep(max(wait, 0.01))
