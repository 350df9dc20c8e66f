"""What LLM requests cost: the price table, the price of counted tokens, and the token estimate that budgets and
rate limits use before a reply has said how many tokens a request took."""

from __future__ import annotations

from emovit_utils.numbers import is_finite_number


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


def cost_usd(prompt_tokens: int, completion_tokens: int, prices: tuple[float, float]) -> float:
    """The price of the tokens, `prices` being USD per million (prompt, completion) tokens."""
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6


def estimate_tokens(messages: list) -> int:
    """About 4 characters per token plus a few per message: good enough for budgets and limits."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages)


def are_prices(value) -> bool:
    """Two finite prices >= 0: USD per million (prompt, completion) tokens."""
    return len(value) == 2 and all(is_finite_number(price, 0) for price in value)


def parse_prices(text: str, flag: str) -> tuple[float, float]:
    """A flag's "PROMPT,COMPLETION" USD per million tokens, e.g. "2.5,10"; ValueError naming `flag` and the text."""
    try:
        prices = tuple(float(part) for part in text.split(","))
    except ValueError:
        prices = ()
    if not are_prices(prices):
        raise ValueError(f"{flag} is {text!r}; use PROMPT,COMPLETION: two prices >= 0 in USD per million tokens, "
                         "e.g. 2.5,10")
    return prices
