"""What the online and the batch client share: the requests and results they exchange with their callers, the
cache key of a request, and the base URL as the openai client takes it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .settings import ClientSettings


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

