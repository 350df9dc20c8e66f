"""The cache of replies (`dataset_builder.llm.cache`) on its own; the clients' use of it is tested with them."""

from dataset_builder.llm import ResponseCache


def test_written_answers_are_in_the_file_before_any_sync(tmp_path):
    # What a process killed right after `write` leaves: the line is in the file (the kernel has it), not in a buffer.
    cache = ResponseCache(tmp_path / "cache.jsonl")
    cache.write({"key": "a", "text": "first"})
    cache.write({"key": "b", "text": "second", "cost_usd": 0.5})
    reread = ResponseCache(tmp_path / "cache.jsonl")
    assert [reread.get(k)["text"] for k in "ab"] == ["first", "second"] and reread.spent_usd == 0.5
    cache.close()
    with open(tmp_path / "cache.jsonl", "a") as f:
        f.write('{"key": "c", "te')  # torn by a crash
    torn = ResponseCache(tmp_path / "cache.jsonl")
    torn.write({"key": "d", "text": "after the tear"})
    torn.close()
    again = ResponseCache(tmp_path / "cache.jsonl")
    assert len(again) == 3 and again.torn_lines == 1 and again.get("d")["text"] == "after the tear"


def test_every_line_counts_towards_the_money_spent(tmp_path):
    cache = ResponseCache(tmp_path / "cache.jsonl")
    cache.append({"key": "a", "text": "first", "cost_usd": 0.25})
    # The same request answered again (a rerun after a crash between write and sync): it was paid for twice.
    cache.append({"key": "a", "text": "again", "cost_usd": 0.25})
    cache.append({"key": "b", "text": "no cost recorded", "prompt_tokens": 7, "completion_tokens": 3})
    reread = ResponseCache(tmp_path / "cache.jsonl")
    assert reread.spent_usd == 0.5 and reread.uncosted_tokens == [7, 3] and len(reread) == 2
