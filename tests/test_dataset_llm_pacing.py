"""Pacing: the waits a server asks for (Retry-After), the quota its rate-limit headers describe, and the hold that
follows from it. The client tests (test_dataset_llm_online.py) check the same against a real server."""

import asyncio
import time

import pytest

from dataset_builder.llm.pacing import HeaderPacer, RateLimiter, parse_duration, parse_retry_after


def test_retry_after_header_forms():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({}) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after({"retry-after": date}) <= 31


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "soon"}, None),
    ({"retry-after": "Mon, 99 Foo 2020 25:61:00 GMT"}, None),
    ({"retry-after": "-5"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after-ms": "garbage", "retry-after": "3"}, 3.0),
    ({"retry-after": "inf"}, float("inf")),
    ({"retry-after": "86400"}, 86400.0),
])
def test_retry_after_is_parsed_defensively(headers, expected):
    assert parse_retry_after(headers) == expected


def test_retry_after_naive_http_date_is_read_as_utc(monkeypatch):
    # A "-0000" date parses without a time zone; read as local time it would be off by the zone's offset.
    monkeypatch.setenv("TZ", "Etc/GMT+5")
    time.tzset()
    try:
        date = time.strftime("%a, %d %b %Y %H:%M:%S -0000", time.gmtime(time.time() + 30))
        assert 25 <= parse_retry_after({"retry-after": date}) <= 31
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("20ms", 0.02), ("6m0s", 360.0), ("1m30.5s", 90.5), ("2h0m1s", 7201.0), ("0s", 0.0),
    ("250us", 0.00025), (" 0.5 ", 0.5), ("3", 3.0), (".5s", 0.5),
    # malformed ones are ignored, not guessed at
    ("", None), ("soon", None), ("-1s", None), ("1x", None), ("1s garbage", None), ("s", None), ("1..2s", None),
    ("nan", None), ("inf", None), (None, None), ("1m-2s", None),
])
def test_reset_durations_are_parsed_or_ignored(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_pacer_holds_requests_the_headers_say_will_not_fit():
    pacer = HeaderPacer(max_hold_s=120.0)
    tickets = [asyncio.run(pacer.acquire(100)) for _ in range(3)]
    # The reply to the first request: 2 requests left, quota full again in 10 s, 10 per window.
    pacer.observe(tickets[0], {"x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "10s",
                               "x-ratelimit-limit-requests": "10"}, now=100.0)
    # Two more were sent after it, so nothing is left: wait for one request's refill, (10 - 2 - 1) / 10 s each.
    assert pacer.wait_time(100, now=100.0) == pytest.approx(10 / 7)
    assert pacer.wait_time(100, now=102.0) == 0.0
    # A reply to an older request says nothing new; malformed headers are ignored.
    pacer.observe((0, 0), {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m"}, now=100.0)
    pacer.observe(tickets[2], {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "1s",
                               "x-ratelimit-remaining-tokens": "5", "x-ratelimit-reset-tokens": "later"}, now=100.0)
    assert pacer.quotas["requests"].remaining == 2 and "tokens" not in pacer.quotas
    # Without a limit header nothing is assumed to refill before the reset.
    pacer.observe(tickets[2], {"x-ratelimit-remaining-tokens": "50", "x-ratelimit-reset-tokens": "2s"}, now=100.0)
    assert pacer.wait_time(100, now=100.5) == pytest.approx(max(10 / 7 - 0.5, 1.5))
    assert pacer.wait_time(100, now=102.1) == 0.0


def test_requests_per_minute_ceiling_holds_the_request_over_it():
    limiter = RateLimiter(3, None)

    async def admit_four():
        for _ in range(3):
            await limiter.acquire(10)
        # The fourth must wait for the window: it cannot be admitted within a short timeout.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await limiter.acquire(10)

    asyncio.run(admit_four())
