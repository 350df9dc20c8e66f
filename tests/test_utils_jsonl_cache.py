"""emovit_utils.jsonl_cache: the append-only cache survives torn and foreign lines."""

import json

from emovit_utils.jsonl_cache import JsonlCache


def test_jsonl_cache_skips_torn_and_foreign_lines_and_appends_on_a_fresh_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    good = {"key": "a", "caption": "a red ball"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"key": "b"}) + "\n" + '{"key": "c", "capt')  # torn tail
    cache = JsonlCache(path, is_entry=lambda entry: isinstance(entry.get("caption"), str))
    assert cache.get("a") == good and "b" not in cache and "c" not in cache and cache.torn_lines == 2
    cache.append({"key": "c", "caption": "x"}, {"key": "d", "caption": "y"})
    reread = JsonlCache(path, is_entry=lambda entry: isinstance(entry.get("caption"), str))
    assert sorted(reread.entries) == ["a", "c", "d"] and reread.torn_lines == 2
    assert path.read_text().splitlines()[-2:] == [json.dumps({"key": "c", "caption": "x"}),
                                                   json.dumps({"key": "d", "caption": "y"})]
