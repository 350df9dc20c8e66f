# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""An append-only JSON-lines cache that survives a crash: work already paid for (a caption, an LLM reply) is kept."""

import json
import logging
import os
from pathlib import Path


logger = logging.getLogger(__name__)


def _has_key(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("key"), str)


class JsonlCache:
    """An append-only JSON-lines file of entries, each with a string `key`, read whole when opened.

    Every append is one write of whole lines followed by fsync, so after a crash the file ends with whole lines or
    one torn line. Lines that do not parse, or that `is_entry` refuses (JSON but not an entry of this cache: missing
    fields, wrong types), are counted in `torn_lines` and skipped: their work is simply done again. A later line
    with the same key wins. Subclasses see each entry through `_add` (the LLM cache sums the money spent there).
    """

    def __init__(self, path: str | os.PathLike, is_entry=_has_key):
        self.path = Path(path)
        self.is_entry = is_entry
        self.entries: dict[str, dict] = {}
        self.torn_lines = 0
        data = self.path.read_bytes() if self.path.exists() else b""
        for line in data.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if _has_key(entry) and is_entry(entry):
                self._add(entry)
            elif line.strip():
                self.torn_lines += 1
        if self.torn_lines:
            logger.warning("%s: ignored %d line(s) cut short or not entries of this cache; their work is redone",
                           self.path, self.torn_lines)
        self._needs_newline = bool(data) and not data.endswith(b"\n")

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def _add(self, entry: dict) -> None:
        self.entries[entry["key"]] = entry

    def append(self, *entries: dict) -> None:
        """Appends the entries in one write + fsync."""
        if not entries:
            return
        text = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
        if self._needs_newline:  # a torn last line from a crash: start on a fresh line
            text = "\n" + text
            self._needs_newline = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for entry in entries:
            self._add(entry)


__all__ = ["JsonlCache"]
