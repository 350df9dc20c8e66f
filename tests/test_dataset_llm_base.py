"""What the online and batch clients share (`dataset_builder.llm.base`): the cache key, the base URL as the openai
client takes it, and the money the cache records as spent."""

import pytest

from dataset_builder.llm import (
    BATCH_STATE_FILE,
    BatchClient,
    BatchSettings,
    ChatClient,
    ChatRequest,
    ClientSettings,
    ResponseCache,
    cache_key,
)
from dataset_builder.llm.base import split_query


def make_request(name="img0", sample=0):
    return ChatRequest(name, [{"role": "user", "content": "describe"}], "hash", 100, sample, 50)


def test_the_cache_key_changes_with_the_request_and_the_sampling():
    settings = ClientSettings(model="gpt-4o")
    key = cache_key(settings, make_request())
    assert key == cache_key(ClientSettings(model="gpt-4o", api_key="k", concurrency=2), make_request())
    assert key != cache_key(settings, make_request(name="img1"))
    assert key != cache_key(settings, make_request(sample=1))
    assert key != cache_key(ClientSettings(model="gpt-4o", temperature=0.0), make_request())
    assert key != cache_key(ClientSettings(model="gpt-4o-mini"), make_request())


def test_the_query_of_the_base_url_becomes_parameters():
    assert split_query("http://host:8000/v1?api_key=K&x=#frag") == ("http://host:8000/v1", {"api_key": "K", "x": ""})
    assert split_query("http://host/v1") == ("http://host/v1", None)
    assert split_query(None) == (None, None)


def test_both_clients_count_what_the_cache_spent_at_online_prices(tmp_path):
    cache = ResponseCache(tmp_path / "cache.jsonl")
    cache.append({"key": "a", "text": "t", "cost_usd": 0.5})
    # A line without a cost is priced at the online prices, batch client or not.
    cache.append({"key": "b", "text": "t", "prompt_tokens": 1_000_000, "completion_tokens": 0})
    settings = ClientSettings(model="gpt-4o")
    online = ChatClient(settings, cache)
    batch = BatchClient(settings, BatchSettings(), cache, tmp_path / BATCH_STATE_FILE)
    assert online.stats.spent_before_usd == batch.stats.spent_before_usd == pytest.approx(0.5 + 2.5)
    # What new requests cost differs: batch prices are half the online ones.
    assert batch._estimated_cost(make_request()) == pytest.approx(online._estimated_cost(make_request()) / 2)
    assert batch.request_body(make_request()) == online.request_body(make_request())
