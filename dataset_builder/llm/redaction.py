"""Keeping the API key and the base URL's credentials out of everything the LLM client shows: summaries, errors,
caches, state files and logs.

A base URL may carry a key in its user info, query or fragment (some proxies take `?api_key=...`), and a server
may echo the key it was sent in an error message. `redact_url` drops those parts from a URL; `secrets_of` lists
what to mask and `mask` masks it in any text; `RedactUrlsFilter` rewrites the request URLs the HTTP library logs,
and `redact_http_logs` installs it.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit, urlunsplit


# The loggers of the HTTP libraries under the openai client; both log each request's full URL at INFO.
HTTP_LOGGERS = ("httpx", "httpx2")
# Shorter values could not be keys, and masking them would only mangle the text.
MIN_SECRET_LENGTH = 3


def redact_url(url: str | None) -> str | None:
    """`url` without user info, query and fragment (where keys hide), for summaries, logs and errors."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return urlunsplit((parts.scheme, host + (f":{port}" if port else ""), parts.path, "", ""))


def url_secrets(url: str | None) -> list[str]:
    """The credential-like parts of a URL as they could appear in text: user info, query (whole, and each value
    decoded) and fragment."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [parts.username, parts.password, parts.query, parts.fragment]
    found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    if "@" in parts.netloc:
        found.append(parts.netloc.rpartition("@")[0])
    return [s for s in found if s]


def secrets_of(api_key: str | None, base_url: str | None) -> list[str]:
    """What `mask` hides for a client of `api_key` and `base_url`, longest first (so a value that contains another
    is masked whole)."""
    found = {api_key, *url_secrets(base_url)}
    return sorted((s for s in found if s and len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def mask(text: str, secrets: list[str]) -> str:
    """`text` with each of `secrets` replaced by `***`."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class RedactUrlsFilter(logging.Filter):
    """Rewrites the URLs among a log record's arguments without user info, query and fragment: the HTTP library
    logs every request URL, query string included, so a key passed in the base URL's query would land in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(str(a)) if "://" in str(a) else a for a in record.args)
        return True


def redact_http_logs() -> None:
    """Puts a `RedactUrlsFilter` on the HTTP libraries' loggers, unless one is there already. The clients call it
    when they are made, before their first request; importing the package changes no logging."""
    for name in HTTP_LOGGERS:
        http_logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUrlsFilter) for f in http_logger.filters):
            http_logger.addFilter(RedactUrlsFilter())
