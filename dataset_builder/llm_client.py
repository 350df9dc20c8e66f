"""LLM client stage, the only module that talks to the network: chat completions for many prompts.

Any OpenAI-compatible server works (OpenAI, vLLM, Ollama, ...) through the official `openai` client.
What this adds around it:

- N requests in flight (asyncio workers), optional requests/min and tokens/min ceilings;
- retries with exponential backoff and full jitter, waiting at least as long as the server's
  `Retry-After` (a 429 pauses every worker, not only the one that got it); no retry on 400, 401,
  403, 404 or 422, which would fail the same way again; a timeout per request;
- an append-only JSONL cache keyed by (prompt hash, model, messages, sampling parameters, sample
  index): a rerun or a resume after a crash sends nothing already answered. Each answer is flushed
  and fsynced as one line, and a torn last line is ignored on load, so `kill -9` loses at most the
  requests in flight;
- token usage and cost from a price table, and a cost ceiling that stops sending new requests;
- `estimate` for --dry_run, which counts what would be sent without opening a connection.

The API key is passed in by the caller (read from OPENAI_API_KEY by the CLI) and is never written to
the cache, logged, or included in any result.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import openai
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

# USD per million (prompt, completion) tokens. Override with --price_per_mtok for other models or prices.
DEFAULT_PRICES = {
    "gpt-4": (30.0, 60.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
}
NO_RETRY_STATUSES = frozenset({400, 401, 403, 404, 422})


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make. `name` identifies it in results and failures (e.g. image id + type)."""

    name: str
    messages: list
    prompt_hash: str
    max_tokens: int | None = None
    # A different sample index asks for a fresh reply to the same prompt (a different cache key).
    sample: int = 0
    expected_completion_tokens: int = 300


@dataclass
class ChatResult:
    request: ChatRequest
    text: str | None = None
    error: str | None = None
    from_cache: bool = False
    not_run: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class ClientSettings:
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 8
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_retries: int = 6
    timeout_s: float = 120.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    temperature: float = 1.0
    top_p: float | None = None
    stream: bool = True
    price_per_mtok: tuple[float, float] | None = None
    max_cost: float | None = None

    def prices(self) -> tuple[float, float]:
        if self.price_per_mtok is not None:
            return self.price_per_mtok
        if self.model in DEFAULT_PRICES:
            return DEFAULT_PRICES[self.model]
        return (0.0, 0.0)


@dataclass
class UsageStats:
    api_calls: int = 0
    retries: int = 0
    cache_hits: int = 0
    failed: int = 0
    not_run: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    stopped_by_max_cost: bool = False


def estimate_tokens(messages: list) -> int:
    """About 4 characters per token plus a few per message: good enough for budgets and limits."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages)


def cache_key(settings: ClientSettings, request: ChatRequest) -> str:
    payload = {
        "prompt_hash": request.prompt_hash,
        "model": settings.model,
        "messages": request.messages,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": request.max_tokens,
        "sample": request.sample,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ResponseCache:
    """Append-only JSONL of successful replies: one `{"key", "text", "prompt_tokens", ...}` line each."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.torn_lines = 0
        if self.path.exists():
            with open(self.path, "rb") as f:
                data = f.read()
            for line in data.splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (ValueError, KeyError, TypeError):
                    # A line cut short by a crash mid-write; its request is simply made again.
                    self.torn_lines += 1
            if self.torn_lines:
                logger.warning("%s: ignored %d incomplete line(s) left by an interrupted run", self.path, self.torn_lines)
            self._needs_newline = bool(data) and not data.endswith(b"\n")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._needs_newline = False

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def append(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        if self._needs_newline:
            line = "\n" + line
            self._needs_newline = False
        # One write of one line, then fsync: after a crash the file ends with whole lines, or one torn line.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.entries[entry["key"]] = entry


class _TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _FatalError(Exception):
    pass


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date), or None."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class _RateLimiter:
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


class ChatClient:
    def __init__(self, settings: ClientSettings, cache: ResponseCache):
        if settings.concurrency < 1:
            raise ValueError(f"concurrency is {settings.concurrency}; use 1 or more requests in flight")
        self.settings = settings
        self.cache = cache
        self.stats = UsageStats()
        self._resume_at = 0.0
        self._reserved_cost = 0.0

    # ------------------------------------------------------------------ accounting

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        price_in, price_out = self.settings.prices()
        return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6

    def _estimated_cost(self, request: ChatRequest) -> float:
        return self._cost(estimate_tokens(request.messages), request.expected_completion_tokens)

    def _result_from_cache(self, request: ChatRequest, entry: dict) -> ChatResult:
        return ChatResult(request, text=entry["text"], from_cache=True,
                          prompt_tokens=entry.get("prompt_tokens", 0), completion_tokens=entry.get("completion_tokens", 0))

    # ------------------------------------------------------------------ one HTTP call

    async def _call(self, client: openai.AsyncOpenAI, request: ChatRequest) -> tuple[str, int, int]:
        kwargs = dict(model=self.settings.model, messages=request.messages, temperature=self.settings.temperature)
        if self.settings.top_p is not None:
            kwargs["top_p"] = self.settings.top_p
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                if not self.settings.stream:
                    response = await client.chat.completions.create(**kwargs)
                    if not response.choices:
                        raise _TransientError("reply had no choices")
                    text = response.choices[0].message.content or ""
                    usage = response.usage
                    finish = response.choices[0].finish_reason
                else:
                    stream = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
                    parts, finish, usage = [], None, None
                    async for chunk in stream:
                        if chunk.usage is not None:
                            usage = chunk.usage
                        for choice in chunk.choices:
                            if choice.delta is not None and choice.delta.content:
                                parts.append(choice.delta.content)
                            if choice.finish_reason:
                                finish = choice.finish_reason
                    text = "".join(parts)
        except TimeoutError as e:
            raise _TransientError(f"no complete reply within {self.settings.timeout_s:g} s") from e
        except openai.APIStatusError as e:
            reason = f"HTTP {e.status_code}: {str(e.message)[:200]}"
            if e.status_code in NO_RETRY_STATUSES:
                raise _FatalError(reason) from e
            raise _TransientError(reason, parse_retry_after(e.response.headers)) from e
        except (openai.APIError, OSError, ValueError) as e:
            # Connection refused or dropped and streams cut mid-way arrive as openai.APIConnectionError; a chunk
            # that is not JSON as a ValueError.
            raise _TransientError(f"{type(e).__name__}: {str(e)[:200]}") from e
        if finish is None:
            # The stream ended without saying it was finished: the text may be cut anywhere.
            raise _TransientError("reply ended without a finish reason (truncated stream)")
        prompt_tokens = usage.prompt_tokens if usage else estimate_tokens(request.messages)
        completion_tokens = usage.completion_tokens if usage else max(1, len(text) // 4)
        return text, prompt_tokens, completion_tokens

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter keeps many workers that failed together from retrying together.
        delay = random.uniform(0, min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt))
        if retry_after is not None:
            delay = max(delay, retry_after + random.uniform(0, 0.1 * retry_after + 0.01))
        return delay

    async def _complete(self, client, limiter: _RateLimiter, request: ChatRequest) -> ChatResult:
        settings = self.settings
        estimate = self._estimated_cost(request)
        if settings.max_cost is not None and self.stats.cost_usd + self._reserved_cost + estimate > settings.max_cost:
            self.stats.stopped_by_max_cost = True
            self.stats.not_run += 1
            return ChatResult(request, error=f"not sent: --max_cost {settings.max_cost:g} USD reached", not_run=True)
        self._reserved_cost += estimate
        try:
            last_error = ""
            for attempt in range(settings.max_retries + 1):
                wait = self._resume_at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await limiter.acquire(estimate_tokens(request.messages) + request.expected_completion_tokens)
                self.stats.api_calls += 1
                try:
                    text, prompt_tokens, completion_tokens = await self._call(client, request)
                except _FatalError as e:
                    return ChatResult(request, error=str(e))
                except _TransientError as e:
                    last_error = str(e)
                    if attempt == settings.max_retries:
                        break
                    delay = self._backoff(attempt, e.retry_after)
                    if e.retry_after is not None:
                        self._resume_at = max(self._resume_at, time.monotonic() + delay)
                    self.stats.retries += 1
                    logger.info("%s: %s; retry %d in %.2f s", request.name, last_error, attempt + 1, delay)
                    await asyncio.sleep(delay)
                    continue
                cost = self._cost(prompt_tokens, completion_tokens)
                self.stats.prompt_tokens += prompt_tokens
                self.stats.completion_tokens += completion_tokens
                self.stats.cost_usd += cost
                self.cache.append({"key": cache_key(settings, request), "name": request.name, "model": settings.model,
                                   "text": text, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
                return ChatResult(request, text=text, prompt_tokens=prompt_tokens,
                                  completion_tokens=completion_tokens, cost_usd=cost)
            return ChatResult(request, error=f"gave up after {settings.max_retries + 1} attempts; last error: {last_error}")
        finally:
            self._reserved_cost -= estimate

    # ------------------------------------------------------------------ many calls

    async def _run(self, requests: list[ChatRequest], results: list, pending: list[int], progress) -> None:
        settings = self.settings
        client = openai.AsyncOpenAI(api_key=settings.api_key or "not-needed", base_url=settings.base_url,
                                    max_retries=0, timeout=settings.timeout_s)
        limiter = _RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in pending:
            queue.put_nowait(index)

        async def worker():
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result = await self._complete(client, limiter, requests[index])
                results[index] = result
                if result.error and not result.not_run:
                    self.stats.failed += 1
                    logger.warning("%s failed: %s", result.request.name, result.error)
                progress.update(1)
                progress.set_postfix(done=progress.n, failed=self.stats.failed, cost=f"${self.stats.cost_usd:.4f}")

        try:
            await asyncio.gather(*(worker() for _ in range(min(settings.concurrency, max(1, len(pending))))))
        finally:
            await client.close()

    def complete_all(self, requests: list[ChatRequest], desc: str = "LLM requests", show_progress: bool = True) -> list[ChatResult]:
        """Results in the order of `requests`; cached answers are returned without a request."""
        results: list[ChatResult | None] = [None] * len(requests)
        pending = []
        for index, request in enumerate(requests):
            entry = self.cache.get(cache_key(self.settings, request))
            if entry is not None:
                results[index] = self._result_from_cache(request, entry)
                self.stats.cache_hits += 1
            else:
                pending.append(index)
        with tqdm(total=len(requests), initial=len(requests) - len(pending), desc=desc, disable=not show_progress) as progress:
            if pending:
                asyncio.run(self._run(requests, results, pending, progress))
        return results  # type: ignore[return-value]


def estimate(requests: list[ChatRequest], settings: ClientSettings, cache: ResponseCache) -> dict:
    """What `complete_all` would send, with no network: request count, estimated tokens and cost."""
    to_send = [r for r in requests if cache_key(settings, r) not in cache]
    prompt_tokens = sum(estimate_tokens(r.messages) for r in to_send)
    completion_tokens = sum(r.expected_completion_tokens for r in to_send)
    price_in, price_out = settings.prices()
    return {
        "requests": len(requests),
        "cached": len(requests) - len(to_send),
        "to_send": len(to_send),
        "estimated_prompt_tokens": prompt_tokens,
        "estimated_completion_tokens": completion_tokens,
        "estimated_cost_usd": round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 6),
        "price_per_mtok": [price_in, price_out],
    }
