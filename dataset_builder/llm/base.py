"""What the online and the batch client share: the requests and results they exchange with their callers, the
cache key of a request, and `BaseClient`, which keeps the settings, the cache and the counters, answers from the
cache, prices tokens, masks secrets and builds the request body and the openai client's arguments for both."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .cache import ResponseCache
from .prices import cost_usd, estimate_tokens
from .redaction import mask, redact_http_logs, secrets_of
from .settings import ClientSettings


logger = logging.getLogger(__name__)


# Statuses that say the key, the model or the URL is wrong, not the one request: repeated, they stop the run.
REFUSING_STATUSES = frozenset({401, 403, 404})
# A reply the server cut short: complete as HTTP, but not the whole answer.
CUT_OFF_FINISH_REASONS = frozenset({"length", "content_filter"})


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make.

    `name` identifies the request (e.g. type/image id) in results and failures, and is part of the cache key:
    two images whose messages are identical still get, and keep, their own answers.
    """

    name: str
    messages: list
    prompt_hash: str
    max_tokens: int | None = None
    # A different sample index asks for a fresh reply to the same prompt (a different cache key).
    sample: int = 0
    expected_completion_tokens: int = 300
    # The OpenAI `response_format` object (e.g. a JSON schema) to send, or None for free text.
    response_format: dict | None = None


@dataclass
class ChatResult:
    """What became of one request: a `text` (answered, or from the cache), or an `error` saying why not."""

    request: ChatRequest
    text: str | None = None
    error: str | None = None
    from_cache: bool = False
    not_run: bool = False
    # The server's finish reason; "length" or "content_filter" mean the text was cut short.
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # The server refused the request's response_format (or refused it for an earlier request): ask without it.
    format_refused: bool = False


@dataclass
class UsageStats:
    """What a client did and spent in this run: counted as it goes, read by the summaries."""

    api_calls: int = 0
    retries: int = 0
    cache_hits: int = 0
    failed: int = 0
    not_run: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # What the cache records as spent before this client started; --max_cost counts it.
    spent_before_usd: float = 0.0
    stopped_by_max_cost: bool = False
    # Waits the server asked for that were longer than max_retry_wait_s and were cut to it.
    capped_retry_waits: int = 0
    # Requests held back because the server's rate-limit headers said its quota was spent.
    held_by_rate_limit_headers: int = 0


def cache_key(settings: ClientSettings, request: ChatRequest) -> str:
    """The key of `request`'s reply in the cache: a hash of the request's identity (name, sample) and of all that
    shapes the reply (prompt hash, model, messages, sampling, token limit, response format)."""
    payload = {
        "name": request.name,
        "prompt_hash": request.prompt_hash,
        "model": settings.model,
        "messages": request.messages,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": request.max_tokens,
        "sample": request.sample,
    }
    if request.response_format is not None:  # absent for text requests, so their keys stay what they were
        payload["response_format"] = request.response_format
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def split_query(url: str | None) -> tuple[str | None, dict | None]:
    """The base URL without query and fragment, and the query as parameters: the openai client appends the
    request path to the base URL's text, which would land after a query string."""
    if not url:
        return url, None
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) or None
    return urlunsplit(parts._replace(query="", fragment="")), query


def spent_on_cache(cache: ResponseCache, settings: ClientSettings) -> float:
    """What the cache records as spent by earlier runs; lines it holds without a cost are priced at the online
    prices, whichever client reads them."""
    return cache.spent_usd + cost_usd(*cache.uncosted_tokens, settings.prices())


@dataclass
class SendPlan:
    """Which of a list of requests a client would send: the cache key of each request, the (key, request) pairs
    neither cached nor held by an earlier run's batches, their estimated tokens, and the counts of the others."""

    keys: list[str]
    to_send: list[tuple[str, ChatRequest]]
    prompt_tokens: int
    completion_tokens: int
    cached: int
    already_submitted: int


def plan_sending(requests: list[ChatRequest], settings: ClientSettings, cache: ResponseCache,
                 held=frozenset()) -> SendPlan:
    """The `SendPlan` of `requests`; `held` are the cache keys of requests an earlier run's batches hold."""
    keys = [cache_key(settings, request) for request in requests]
    to_send = [(key, request) for key, request in zip(keys, requests) if key not in cache and key not in held]
    return SendPlan(keys=keys, to_send=to_send,
                    prompt_tokens=sum(estimate_tokens(request.messages) for _, request in to_send),
                    completion_tokens=sum(request.expected_completion_tokens for _, request in to_send),
                    cached=sum(key in cache for key in keys),
                    already_submitted=sum(key in held and key not in cache for key in keys))


class BaseClient:
    """The part of `ChatClient` and `BatchClient` that does not depend on how requests travel. Each subclass adds
    `complete_all(requests, desc, show_progress)`, which returns one `ChatResult` per request, in order; the batch
    client also overrides `_prices` (batch prices are not the online ones)."""

    def __init__(self, settings: ClientSettings, cache: ResponseCache):
        self.settings = settings
        self.cache = cache
        self.stats = UsageStats()
        self.stats.spent_before_usd = spent_on_cache(cache, settings)
        # Set when the server keeps refusing; nothing more is sent after that.
        self.stop_reason: str | None = None
        self._secrets = secrets_of(settings.api_key, settings.base_url)
        # The HTTP library logs each request's URL, base URL query included; from here on those logs are masked.
        redact_http_logs()

    # ------------------------------------------------------------------ accounting

    def _prices(self) -> tuple[float, float]:
        """USD per million (prompt, completion) tokens of this client's requests."""
        return self.settings.prices()

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return cost_usd(prompt_tokens, completion_tokens, self._prices())

    def _estimated_cost(self, request: ChatRequest) -> float:
        return self._cost(estimate_tokens(request.messages), request.expected_completion_tokens)

    # ------------------------------------------------------------------ results

    def _look_up(self, requests: list[ChatRequest]) -> tuple[list[ChatResult | None], list[str]]:
        """The result of each request that the cache answers (None for the others), and every request's cache key."""
        keys = [cache_key(self.settings, request) for request in requests]
        results: list[ChatResult | None] = []
        for request, key in zip(requests, keys):
            entry = self.cache.get(key)
            if entry is None:
                results.append(None)
            else:
                results.append(self._result_from_cache(request, entry))
                self.stats.cache_hits += 1
        return results, keys

    def _result_from_cache(self, request: ChatRequest, entry: dict) -> ChatResult:
        return ChatResult(request, text=entry["text"], from_cache=True, finish_reason=entry.get("finish_reason"),
                          prompt_tokens=entry.get("prompt_tokens", 0), completion_tokens=entry.get("completion_tokens", 0))

    def _not_sent(self, request: ChatRequest, reason: str) -> ChatResult:
        self.stats.not_run += 1
        return ChatResult(request, error=f"not sent: {reason}", not_run=True)

    def _count_failure(self, result: ChatResult) -> None:
        """Counts and logs `result` when the server failed it; requests not sent, and those the caller will ask
        again without their refused response format, are not failures."""
        if result.error and not result.not_run and not result.format_refused:
            self.stats.failed += 1
            logger.warning("%s failed: %s", result.request.name, result.error)

    def _redact(self, text: str) -> str:
        """`text` with the API key and the base URL's credential-like parts masked (servers may echo them)."""
        return mask(text, self._secrets)

    # ------------------------------------------------------------------ the request

    def request_body(self, request: ChatRequest) -> dict:
        """The chat completion's parameters for `request` (model, messages, sampling, response format): what the
        online call sends, and the `body` of the request's line in a batch file."""
        body = dict(model=self.settings.model, messages=request.messages, temperature=self.settings.temperature)
        if self.settings.top_p is not None:
            body["top_p"] = self.settings.top_p
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.response_format is not None:
            body["response_format"] = request.response_format
        return body

    def _openai_arguments(self, max_retries: int) -> dict:
        """The keyword arguments of the openai client (sync or async) for these settings. A server that wants no key
        still gets a placeholder, which the openai client insists on."""
        base_url, query = split_query(self.settings.base_url)
        return dict(api_key=self.settings.api_key or "not-needed", base_url=base_url, default_query=query,
                    max_retries=max_retries, timeout=self.settings.timeout_s)
