"""The online LLM client: chat completions for many prompts, each sent as a request of its own.

Any OpenAI-compatible server works (OpenAI, vLLM, Ollama, ...) through the official `openai` client.
What this adds around it:

- N requests in flight (asyncio workers), optional requests/min and tokens/min ceilings;
- pacing from the server's own quota: when its replies carry `x-ratelimit-remaining-*` and
  `x-ratelimit-reset-*` headers, a new request is held back while they say the quota left, less what
  was sent since, will not cover it, until the quota has refilled (see `HeaderPacer`). The first
  `concurrency` requests go out before any header has been seen;
- retries with exponential backoff and full jitter, waiting at least as long as the server's
  `Retry-After` (a 429 pauses every worker, not only the one that got it) but never longer than
  `max_retry_wait_s`; an unreadable `Retry-After` falls back to the backoff. No retry on 400, 401,
  403, 404 or 422, which would fail the same way again; a timeout per request;
- failing fast: after `fail_fast_after` requests in a row end with the same refusal (401, 403, 404,
  or no connection after all retries) nothing more is sent; `stop_reason` says why;
- structured outputs: a request may carry a `response_format` (a JSON schema), sent as is. When the
  server refuses the field (a 400 or 422 naming it), `format_refusal` says why and no further request
  carrying one is sent; the caller asks again without it;
- an append-only JSONL cache keyed by the request's identity (its name, i.e. type and image, and
  sample index) and content (prompt hash, model, messages, sampling parameters, response format): a
  rerun or a resume after a crash sends nothing already answered, and two images with the same prompt
  keep their own answers. Each answer goes to the file as one line in one `write` as soon as it
  arrives, so `kill -9` loses at most the requests in flight; the file is fsynced in the background at
  most `CACHE_SYNC_INTERVAL_S` apart and at the end of each run, so a power loss or kernel crash can
  also lose the answers of the last interval (they are asked for again, and their cost is not
  counted). A torn line, or one without a text, is ignored and counted on load;
- token usage and cost from a price table, and a cost ceiling over everything the cache records as
  spent, this run and earlier ones, that stops sending new requests;
- `estimate` for --dry_run, which counts what would be sent without opening a connection.

The API key is passed in by the caller (read from OPENAI_API_KEY by the CLI) and is never written to
the cache, logged, or included in any result; nor are the user info, query or fragment of the base URL.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import NamedTuple

import openai
from tqdm.auto import tqdm

from .base import REFUSING_STATUSES, BaseClient, ChatRequest, ChatResult, plan_sending, spent_on_cache
from .cache import ResponseCache
from .pacing import HeaderPacer, RateLimiter, parse_retry_after
from .prices import cost_usd, estimate_tokens
from .redaction import redact_url
from .settings import ClientSettings


logger = logging.getLogger(__name__)

NO_RETRY_STATUSES = frozenset({400, 401, 403, 404, 422})
# A 400/422 whose message or `param` names one of these refuses the structured-output field, not the request.
_FORMAT_REFUSAL = re.compile(r"response_format|json_schema|structured output|guided_json|guided decoding", re.IGNORECASE)
# Answers are written at once; fsync (durability across a power loss) runs in the background this far apart.
CACHE_SYNC_INTERVAL_S = 0.5


class _Reply(NamedTuple):
    """An answered request as the server sent it."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    # The response headers, which carry the server's rate-limit quota.
    headers: object


class _TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, no_connection: bool = False, headers=None):
        super().__init__(reason)
        self.retry_after = retry_after
        self.no_connection = no_connection
        # The error response's headers (a 429 carries the rate-limit ones), or None.
        self.headers = headers


class _FatalError(Exception):
    def __init__(self, reason: str, status: int, format_refusal: bool = False):
        super().__init__(reason)
        self.status = status
        # The server refused the structured-output field, not the request as such.
        self.format_refusal = format_refusal


class ChatClient(BaseClient):
    """Sends each request as an HTTP call of its own, `concurrency` at a time; see the module docstring."""

    def __init__(self, settings: ClientSettings, cache: ResponseCache):
        super().__init__(settings, cache)
        self._refusal: str | None = None
        self._refusals_in_a_row = 0
        # Set when the server refused the response_format field; requests carrying one are not sent after that.
        self.format_refusal: str | None = None
        self._resume_at = 0.0
        self._reserved_cost = 0.0
        self._pacer = HeaderPacer(settings.max_retry_wait_s) if settings.pace_from_headers else None

    def _note_outcome(self, refusal: str | None, reason: str = "") -> None:
        """Counts identical refusals in a row (any other outcome breaks the row) and stops the run at the limit."""
        if refusal != self._refusal:
            self._refusal, self._refusals_in_a_row = refusal, 0
        if refusal is None:
            return
        self._refusals_in_a_row += 1
        if self._refusals_in_a_row >= self.settings.fail_fast_after and self.stop_reason is None:
            flags = self.settings.flag_names
            if refusal == "no connection":
                advice = f"check that the server at {redact_url(self.settings.base_url) or 'the default URL'} is running and reachable"
            elif refusal == "HTTP 404":
                advice = (f"check {flags['base_url']} (OpenAI-compatible servers usually end in /v1) and "
                          f"{flags['model']}")
            else:
                advice = f"check OPENAI_API_KEY and that the key may use {flags['model']}"
            self.stop_reason = (f"stopped after {self._refusals_in_a_row} requests in a row failed the same way "
                                f"({reason}); {advice}. Answers already received are kept in {self.cache.path}")
            logger.error("%s", self.stop_reason)

    # ------------------------------------------------------------------ one HTTP call

    async def _call(self, client: openai.AsyncOpenAI, request: ChatRequest) -> _Reply:
        """One HTTP call of `request`; its failures come out as `_TransientError` (worth another try) or
        `_FatalError` (would fail the same way again)."""
        body = self.request_body(request)
        receive = self._receive_stream if self.settings.stream else self._receive_whole
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                text, finish, usage, headers = await receive(client, body)
        except TimeoutError as e:
            raise _TransientError(f"no complete reply within {self.settings.timeout_s:g} s") from e
        except openai.APIStatusError as e:
            reason = self._redact(f"HTTP {e.status_code}: {str(e.message)[:200]}")
            if e.status_code in NO_RETRY_STATUSES:
                refuses_format = (request.response_format is not None and e.status_code in (400, 422)
                                  and bool(_FORMAT_REFUSAL.search(f"{e.message} {getattr(e, 'param', '')}")))
                raise _FatalError(reason, e.status_code, refuses_format) from e
            raise _TransientError(reason, parse_retry_after(e.response.headers), headers=e.response.headers) from e
        except (openai.APIError, OSError, ValueError) as e:
            # Connection refused or dropped and streams cut mid-way arrive as openai.APIConnectionError; a chunk
            # that is not JSON as a ValueError.
            no_connection = isinstance(e, openai.APIConnectionError) and not isinstance(e, openai.APITimeoutError)
            raise _TransientError(self._redact(f"{type(e).__name__}: {str(e)[:200]}"), no_connection=no_connection) from e
        if finish is None:
            # The stream ended without saying it was finished: the text may be cut anywhere.
            raise _TransientError("reply ended without a finish reason (truncated stream)")
        prompt_tokens = usage.prompt_tokens if usage else estimate_tokens(request.messages)
        completion_tokens = usage.completion_tokens if usage else max(1, len(text) // 4)
        return _Reply(text, finish, prompt_tokens, completion_tokens, headers)

    @staticmethod
    async def _receive_whole(client: openai.AsyncOpenAI, body: dict) -> tuple:
        """(text, finish reason, usage, headers) of a reply sent in one piece."""
        raw = await client.chat.completions.with_raw_response.create(**body)
        response = raw.parse()
        if not response.choices:
            raise _TransientError("reply had no choices")
        choice = response.choices[0]
        return choice.message.content or "", choice.finish_reason, response.usage, raw.headers

    @staticmethod
    async def _receive_stream(client: openai.AsyncOpenAI, body: dict) -> tuple:
        """(text, finish reason, usage, headers) of a streamed reply; the finish reason is None when the stream
        ended without one."""
        stream = await client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
        parts, finish, usage = [], None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    parts.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
        return "".join(parts), finish, usage, stream.response.headers

    def _backoff(self, request: ChatRequest, attempt: int, retry_after: float | None) -> float:
        # Full jitter keeps many workers that failed together from retrying together.
        delay = random.uniform(0, min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt))
        if retry_after is not None:
            if retry_after > self.settings.max_retry_wait_s:
                self.stats.capped_retry_waits += 1
                logger.warning("%s: the server asked to wait %g s; waiting the maximum of %g s instead",
                               request.name, retry_after, self.settings.max_retry_wait_s)
                retry_after = self.settings.max_retry_wait_s
            delay = max(delay, retry_after + random.uniform(0, 0.1 * retry_after + 0.01))
        return min(delay, self.settings.max_retry_wait_s)

    # ------------------------------------------------------------------ one request, with its retries

    async def _complete(self, client, limiter: RateLimiter, request: ChatRequest, key: str) -> ChatResult:
        """The result of `request`: refused before sending, or sent and retried until it is answered, fails for
        good, or runs out of attempts."""
        estimate = self._estimated_cost(request)
        not_sent = self._check_before_sending(request, estimate)
        if not_sent is not None:
            return not_sent
        # Reserved while the request is in flight, so that requests sent together cannot pass max_cost together.
        self._reserved_cost += estimate
        try:
            return await self._send_with_retries(client, limiter, request, key)
        finally:
            self._reserved_cost -= estimate

    def _check_before_sending(self, request: ChatRequest, estimate: float) -> ChatResult | None:
        """The result of a request that must not be sent (the run has stopped, the server refused its response
        format, or its estimated cost would pass max_cost), else None."""
        if self.stop_reason is not None:
            return self._not_sent(request, self.stop_reason)
        if request.response_format is not None and self.format_refusal is not None:
            return ChatResult(request, error=f"not sent: {self.format_refusal}", format_refused=True)
        max_cost = self.settings.max_cost
        spent = self.stats.spent_before_usd + self.stats.cost_usd
        if max_cost is not None and spent + self._reserved_cost + estimate > max_cost:
            self.stats.stopped_by_max_cost = True
            return self._not_sent(request, f"{self.settings.flag_names['max_cost']} {max_cost:g} USD reached "
                                           f"({spent:.4f} USD spent on this cache, this run and earlier ones)")
        return None

    async def _send_with_retries(self, client, limiter: RateLimiter, request: ChatRequest, key: str) -> ChatResult:
        """Up to 1 + max_retries calls of `request`, each after the wait the last failure asked for."""
        last_error, no_connection = "", False
        for attempt in range(self.settings.max_retries + 1):
            await self._wait_for_resume()
            if self.stop_reason is not None:
                return self._not_sent(request, self.stop_reason)
            try:
                reply = await self._paced_call(client, limiter, request)
            except _FatalError as e:
                return self._failed_for_good(request, e)
            except _TransientError as e:
                last_error, no_connection = str(e), e.no_connection
                if attempt == self.settings.max_retries:
                    break
                await self._retry_later(request, attempt, e)
                continue
            return self._answered(request, key, reply)
        reason = f"gave up after {self.settings.max_retries + 1} attempts; last error: {last_error}"
        self._note_outcome("no connection" if no_connection else None, reason)
        return ChatResult(request, error=reason)

    async def _wait_for_resume(self) -> None:
        """Waits out the pause a server's Retry-After put on every worker."""
        wait = self._resume_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _paced_call(self, client, limiter: RateLimiter, request: ChatRequest) -> _Reply:
        """`_call` once the user's ceilings and the server's quota allow it; the pacer learns from the reply's
        headers, or from those of a transient error (a 429 carries them)."""
        prompt_estimate = estimate_tokens(request.messages)
        await limiter.acquire(prompt_estimate + request.expected_completion_tokens)
        ticket = None
        if self._pacer is not None:
            # Servers count a request's max_tokens against the token quota, not what it will use.
            completion_quota = request.max_tokens or request.expected_completion_tokens
            ticket = await self._pacer.acquire(prompt_estimate + completion_quota)
        self.stats.api_calls += 1
        try:
            reply = await self._call(client, request)
        except _TransientError as e:
            self._observe(ticket, e.headers)
            raise
        else:
            self._observe(ticket, reply.headers)
        finally:
            if ticket is not None:
                self._pacer.done(ticket)
        return reply

    def _observe(self, ticket, headers) -> None:
        """Hands the headers of the reply to the request of `ticket` to the pacer, when there is one."""
        if ticket is not None:
            self._pacer.observe(ticket, headers)

    async def _retry_later(self, request: ChatRequest, attempt: int, error: _TransientError) -> None:
        delay = self._backoff(request, attempt, error.retry_after)
        if error.retry_after is not None:
            # The server asked the client, not this request, to wait: every worker holds off until then.
            self._resume_at = max(self._resume_at, time.monotonic() + delay)
        self.stats.retries += 1
        logger.info("%s: %s; retry %d in %.2f s", request.name, error, attempt + 1, delay)
        await asyncio.sleep(delay)

    def _failed_for_good(self, request: ChatRequest, error: _FatalError) -> ChatResult:
        """The result of a request the server refused for good; a refused response format is noted once, so that
        no later request carries one."""
        self._note_outcome(f"HTTP {error.status}" if error.status in REFUSING_STATUSES else None, str(error))
        if not error.format_refusal:
            return ChatResult(request, error=str(error))
        if self.format_refusal is None:
            self.format_refusal = f"the server refused the response_format field ({error})"
            logger.warning("%s; no more requests with a response_format are sent", self.format_refusal)
        return ChatResult(request, error=str(error), format_refused=True)

    def _answered(self, request: ChatRequest, key: str, reply: _Reply) -> ChatResult:
        """Counts the reply's tokens and cost, writes it to the cache and returns its result."""
        self._note_outcome(None)
        cost = self._cost(reply.prompt_tokens, reply.completion_tokens)
        self.stats.prompt_tokens += reply.prompt_tokens
        self.stats.completion_tokens += reply.completion_tokens
        self.stats.cost_usd += cost
        self.cache.write({"key": key, "name": request.name, "model": self.settings.model, "text": reply.text,
                          "finish_reason": reply.finish_reason, "prompt_tokens": reply.prompt_tokens,
                          "completion_tokens": reply.completion_tokens, "cost_usd": cost})
        return ChatResult(request, text=reply.text, finish_reason=reply.finish_reason,
                          prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens, cost_usd=cost)

    # ------------------------------------------------------------------ many calls

    async def _run(self, requests: list[ChatRequest], keys: list[str], results: list, pending: list[int],
                   progress) -> None:
        settings = self.settings
        # Retries are this client's own (backoff, Retry-After, pacing), so the openai client makes none.
        client = openai.AsyncOpenAI(**self._openai_arguments(max_retries=0))
        limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in pending:
            queue.put_nowait(index)

        async def worker():
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result = await self._complete(client, limiter, requests[index], keys[index])
                results[index] = result
                self._count_failure(result)
                if not progress.disable:
                    # The bar redraws at its own pace (update); forcing a redraw per request costs more than the request.
                    progress.set_postfix(failed=self.stats.failed, cost=f"${self.stats.cost_usd:.4f}", refresh=False)
                    progress.update(1)

        finished = asyncio.Event()

        async def sync_cache():
            # fsync off the event loop, a group of answers at a time: the loop never waits for the disk.
            while not finished.is_set():
                try:
                    await asyncio.wait_for(finished.wait(), CACHE_SYNC_INTERVAL_S)
                except TimeoutError:
                    pass
                await asyncio.to_thread(self.cache.sync)

        syncer = asyncio.create_task(sync_cache())
        try:
            await asyncio.gather(*(worker() for _ in range(min(settings.concurrency, max(1, len(pending))))))
        finally:
            finished.set()
            await syncer
            self.cache.close()
            await client.close()
            if self._pacer is not None:
                self.stats.held_by_rate_limit_headers = self._pacer.holds

    def complete_all(self, requests: list[ChatRequest], desc: str = "LLM requests", show_progress: bool = True) -> list[ChatResult]:
        """Results in the order of `requests`; cached answers are returned without a request."""
        results, keys = self._look_up(requests)
        pending = [index for index, result in enumerate(results) if result is None]
        with tqdm(total=len(requests), initial=len(requests) - len(pending), desc=desc, disable=not show_progress) as progress:
            if pending:
                asyncio.run(self._run(requests, keys, results, pending, progress))
        return results  # type: ignore[return-value]



def estimate(requests: list[ChatRequest], settings: ClientSettings, cache: ResponseCache, held=frozenset(),
             reserved_usd: float = 0.0) -> dict:
    """What `complete_all` would send, with no network: request count, estimated tokens and cost. `held` are the
    cache keys of requests that batches of an earlier run hold (collected first, not sent), `reserved_usd` those
    batches' estimated cost."""
    plan = plan_sending(requests, settings, cache, held)
    prices = settings.prices()
    return {
        "requests": len(requests),
        "cached": plan.cached,
        "already_submitted": plan.already_submitted,
        "to_send": len(plan.to_send),
        "estimated_prompt_tokens": plan.prompt_tokens,
        "estimated_completion_tokens": plan.completion_tokens,
        "estimated_cost_usd": round(cost_usd(plan.prompt_tokens, plan.completion_tokens, prices), 6),
        "price_per_mtok": list(prices),
        # Spent on this cache by earlier runs, and reserved by their batches not yet collected; --max_cost counts both.
        "already_spent_usd": round(spent_on_cache(cache, settings), 6),
        "reserved_usd": round(reserved_usd, 6),
    }
