"""The LLM client of the data builder, the only code of the project that talks to the network.

Chat completions for many prompts against any OpenAI-compatible server, one module per job:

- `settings`: `ClientSettings`, checked when made;
- `prices`: the price table, the cost of tokens and the token estimate;
- `cache`: `ResponseCache`, the replies on disk and the money they cost;
- `redaction`: keeping the key and the base URL's credentials out of texts and logs;
- `base`: what both clients share: `ChatRequest`, `ChatResult`, `UsageStats`, `cache_key`;
- `online`: `ChatClient`, one request per prompt, and `estimate` for dry runs;
- `batch`: `BatchClient`, the same requests through the OpenAI Batch API at half the price;
- `pacing`: when the online client may send, from the server's headers and the user's ceilings.

Both clients take the same settings and cache and return results in the order of the requests, so the caller
can pick one and run it.
"""

from .base import CUT_OFF_FINISH_REASONS, ChatRequest, ChatResult, UsageStats, cache_key
from .batch import BATCH_STATE_FILE, BatchClient, BatchCounts, BatchSettings, BatchState, held_requests
from .cache import ResponseCache
from .online import ChatClient, estimate
from .prices import DEFAULT_PRICES, are_prices, cost_usd, estimate_tokens, parse_prices
from .redaction import redact_url
from .settings import BUILDER_FLAGS, RESPONSE_FORMATS, ClientSettings, check_base_url


__all__ = [
    "BATCH_STATE_FILE", "BUILDER_FLAGS", "BatchClient", "BatchCounts", "BatchSettings", "BatchState",
    "CUT_OFF_FINISH_REASONS", "ChatClient", "ChatRequest", "ChatResult", "ClientSettings", "DEFAULT_PRICES",
    "RESPONSE_FORMATS", "ResponseCache", "UsageStats", "cache_key", "check_base_url", "cost_usd", "estimate",
    "estimate_tokens", "held_requests", "parse_prices", "redact_url", "are_prices",
]
