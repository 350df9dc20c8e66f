"""The settings of the LLM client: the server, the model and its sampling, how many requests go out and how fast,
retries, the cost ceiling and the reply format. Each value is checked when the settings are made, and a bad one is
named with what to use instead."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from emovit_utils.numbers import is_finite_number, is_whole_number

from .prices import DEFAULT_PRICES, are_prices
from .redaction import redact_url


# "text" asks for labelled lines; "json_schema" for JSON under a schema (structured outputs).
RESPONSE_FORMATS = ("text", "json_schema")
# The command-line flags that the client's advice names, by setting: the data builder's. A command whose flags are
# named otherwise passes its own (evaluate.py's judge: --judge_model, ...), so the advice names flags it has.
BUILDER_FLAGS = {"model": "--llm_model", "base_url": "--base_url", "max_cost": "--max_cost"}


def check_base_url(url: str | None) -> None:
    """Raises ValueError (showing the URL without its credential-like parts) unless `url` is http(s) with a host."""
    if url is None:
        return
    parts = urlsplit(url)
    try:
        parts.port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url {redact_url(url)!r} is not an http(s) URL with a host; use e.g. "
                         "http://localhost:8000/v1")


@dataclass
class ClientSettings:
    """How the client talks to the server. `base_url` and `api_key` stay out of the repr, since keys hide in both.
    A `base_url` of None is the openai client's default (OPENAI_BASE_URL, else OpenAI's); an `api_key` of None
    sends a placeholder, for local servers that want none."""

    model: str
    base_url: str | None = field(default=None, repr=False)
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
    # No single wait before a retry is longer than this, whatever the server's Retry-After says.
    max_retry_wait_s: float = 120.0
    # This many requests in a row refused the same way (401, 403, 404, no connection) stop the run.
    fail_fast_after: int = 3
    # "json_schema" asks the writer for JSON replies under a schema (structured outputs); "text" for labelled lines.
    response_format: str = "text"
    # Hold requests back while the server's x-ratelimit-* headers say its quota is spent.
    pace_from_headers: bool = True
    # The flags messages name for `model`, `base_url` and `max_cost` (see BUILDER_FLAGS).
    flag_names: dict = field(default_factory=lambda: dict(BUILDER_FLAGS))

    def __post_init__(self):
        def require(name, ok, what):
            if not ok:
                raise ValueError(f"{name} is {getattr(self, name)!r}; {what}")

        require("concurrency", is_whole_number(self.concurrency, 1), "use 1 or more requests in flight")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            require(name, value is None or is_whole_number(value, 1), "use a whole number >= 1, or leave it unset")
        require("max_retries", is_whole_number(self.max_retries, 0), "use 0 or more")
        require("fail_fast_after", is_whole_number(self.fail_fast_after, 1), "use 1 or more")
        for name in ("timeout_s", "backoff_base_s", "backoff_max_s"):
            require(name, is_finite_number(getattr(self, name), 0, above=True), "use a finite number of seconds > 0")
        require("max_retry_wait_s", is_finite_number(self.max_retry_wait_s, 0),
                "use a finite number of seconds >= 0")
        require("temperature", is_finite_number(self.temperature, 0), "use a finite number >= 0")
        require("top_p", self.top_p is None or is_finite_number(self.top_p, 0, above=True, maximum=1), "use a number in (0, 1]")
        require("max_cost", self.max_cost is None or is_finite_number(self.max_cost, 0),
                "use a finite number of USD >= 0, or leave it unset for no ceiling")
        require("price_per_mtok", self.price_per_mtok is None or are_prices(self.price_per_mtok),
                "use two finite prices >= 0 (prompt, completion)")
        require("response_format", self.response_format in RESPONSE_FORMATS, f"use one of {', '.join(RESPONSE_FORMATS)}")
        check_base_url(self.base_url)

    def prices(self) -> tuple[float, float]:
        if self.price_per_mtok is not None:
            return self.price_per_mtok
        if self.model in DEFAULT_PRICES:
            return DEFAULT_PRICES[self.model]
        return (0.0, 0.0)
