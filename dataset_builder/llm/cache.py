"""The cache of LLM replies, which is also the record of the money spent on them.

An append-only JSONL file, one reply a line, keyed by the request's identity and content (`base.cache_key`): a
rerun or a resume after a crash sends nothing already answered. The online client writes each answer as one line
in one `write` as soon as it arrives, so `kill -9` loses at most the requests in flight, and fsyncs in the
background; a power loss can also lose the answers of the last sync interval (they are asked for again, and their
cost is not counted). A torn line, or one without a text, is ignored and counted on load.
"""

from __future__ import annotations

import json
import os

from emovit_utils.jsonl_cache import JsonlCache
from emovit_utils.numbers import is_finite_number, is_whole_number


def _is_cache_entry(entry) -> bool:
    """Whether a parsed cache line has what a cached reply needs, with the right types."""
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not isinstance(entry.get("text"), str):
        return False
    for name in ("prompt_tokens", "completion_tokens"):
        value = entry.get(name, 0)
        if not is_whole_number(value, 0):
            return False
    if not is_finite_number(entry.get("cost_usd", 0.0), 0):
        return False
    return entry.get("finish_reason") is None or isinstance(entry["finish_reason"], str)


class ResponseCache(JsonlCache):
    """The cache of replies: one `{"key", "text", "finish_reason", "prompt_tokens", "cost_usd", ...}` line each.
    Also the record of money spent: `spent_usd` sums every line's cost, and `uncosted_tokens` the tokens of lines
    written without one.

    Besides `append` (write + fsync at once), `write` puts one entry in the file with a single `os.write` on a
    descriptor kept open, without waiting for the disk: once it returns, the line survives the process being
    killed. `sync` (safe to call from another thread) and `close` fsync what was written, which makes it survive
    a power loss too. The client writes every answer and syncs in the background.
    """

    def __init__(self, path: str | os.PathLike):
        self.spent_usd = 0.0
        self.uncosted_tokens = [0, 0]
        self._fd: int | None = None
        self._written = self._synced = 0
        super().__init__(path, is_entry=_is_cache_entry)

    def write(self, entry: dict) -> None:
        """Appends `entry` as one line without fsync; see the class docstring."""
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        if self._needs_newline:  # a torn last line from a crash: start on a fresh line
            data = b"\n" + data
            self._needs_newline = False
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview(data)
        while view:  # a regular file takes it in one go; the loop only guards against a short write
            view = view[os.write(self._fd, view):]
        self._written += 1
        self._add(entry)

    def sync(self) -> None:
        """Fsyncs the lines `write` has put in the file so far."""
        fd, written = self._fd, self._written
        if fd is not None and written > self._synced:
            os.fsync(fd)
            self._synced = written

    def close(self) -> None:
        """Fsyncs and closes the file `write` appends to; a later `write` opens it again."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def _add(self, entry: dict) -> None:
        # Every line counts towards the money spent, also one whose key was answered before: it was paid for.
        super()._add(entry)
        if "cost_usd" in entry:
            self.spent_usd += entry["cost_usd"]
        else:
            self.uncosted_tokens[0] += entry.get("prompt_tokens", 0)
            self.uncosted_tokens[1] += entry.get("completion_tokens", 0)
