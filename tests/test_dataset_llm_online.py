"""The online LLM client against a real OpenAI-compatible server on loopback (llmock's pytest fixture `llmock`).

Requests are counted at the server (llmock's journal), never by patching the openai client.
"""

import json
import time

import pytest
from llmock.scenarios import Delay, Fail, Reply, StreamFault

from dataset_builder.llm import (
    ChatClient,
    ChatRequest,
    ClientSettings,
    ResponseCache,
    cache_key,
    estimate,
)


CHAT_PATH = "/v1/chat/completions"


def chat_requests(llmock):
    return [r for r in llmock.requests if r.path == CHAT_PATH]


def make_requests(n, sample=0):
    return [ChatRequest(f"img{i}", [{"role": "user", "content": f"describe image {i}"}], "hash", 100, sample, 50)
            for i in range(n)]


def make_client(llmock, tmp_path, **overrides):
    settings = dict(model="gpt-4o", base_url=llmock.base_url(), api_key="sk-test-SECRET", concurrency=4,
                    backoff_base_s=0.02, backoff_max_s=0.1, timeout_s=5.0)
    settings.update(overrides)
    return ChatClient(ClientSettings(**settings), ResponseCache(tmp_path / "cache.jsonl"))


def test_retry_waits_at_least_retry_after(llmock, tmp_path):
    llmock.add(Fail(429, retry_after=0.6, times=1), Reply(text="fine", times=None))
    client = make_client(llmock, tmp_path)
    [result] = client.complete_all(make_requests(1), show_progress=False)
    assert result.text == "fine" and result.error is None
    first, second = chat_requests(llmock)
    assert first.status == 429 and second.status == 200
    # Backoff alone is capped at 0.1 s here, so a gap this long can only come from Retry-After.
    assert second.started_at - first.ended_at >= 0.6
    assert client.stats.api_calls == 2 and client.stats.retries == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_no_retry_on_client_errors(llmock, tmp_path, status):
    llmock.add(Fail(status, times=None))
    client = make_client(llmock, tmp_path)
    [result] = client.complete_all(make_requests(1), show_progress=False)
    assert result.text is None and f"HTTP {status}" in result.error
    assert len(chat_requests(llmock)) == 1
    assert len(ResponseCache(tmp_path / "cache.jsonl")) == 0


def test_gives_up_after_max_retries_on_5xx(llmock, tmp_path):
    llmock.add(Fail(500, times=None))
    client = make_client(llmock, tmp_path, max_retries=2)
    [result] = client.complete_all(make_requests(1), show_progress=False)
    assert "gave up after 3 attempts" in result.error and "HTTP 500" in result.error
    assert len(chat_requests(llmock)) == 3 and client.stats.failed == 1


def test_nothing_lost_or_duplicated_under_faults(llmock, tmp_path):
    llmock.add(
        Fail(429, retry_after=0.2, times=2), Fail(500, times=2), Fail(503, times=1),
        StreamFault("disconnect", after_chunks=1, times=2),  # dropped connection mid-reply
        StreamFault("truncate", after_chunks=1, times=1),  # reply cut off without a finish reason
        StreamFault("malformed", after_chunks=1, times=1),  # a chunk that is not JSON
        Delay(0.05, times=None), Reply(text="Question: q?\nAnswer: a.", times=None),
    )
    client = make_client(llmock, tmp_path, concurrency=4)
    requests = make_requests(20)
    results = client.complete_all(requests, show_progress=False)
    assert [r.request.name for r in results] == [r.name for r in requests]
    assert all(r.error is None and r.text == "Question: q?\nAnswer: a." for r in results)
    served = chat_requests(llmock)
    assert client.stats.api_calls == len(served) == 20 + 9  # every fault cost exactly one extra request
    faults = [r.fault for r in served if r.fault]
    assert len(faults) == 9, faults
    cache_lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert len(cache_lines) == 20
    assert len({json.loads(line)["key"] for line in cache_lines}) == 20


def test_stalled_reply_times_out_and_is_retried(llmock, tmp_path):
    llmock.add(StreamFault("stall", after_chunks=1, stall_seconds=5.0, times=1), Reply(text="ok", times=None))
    client = make_client(llmock, tmp_path, timeout_s=0.5)
    start = time.monotonic()
    [result] = client.complete_all(make_requests(1), show_progress=False)
    assert result.text == "ok"
    assert time.monotonic() - start < 3.0
    assert len(chat_requests(llmock)) == 2


def test_second_run_makes_zero_requests_and_key_stays_out_of_cache(llmock, tmp_path):
    llmock.add(Reply(text="cached answer", times=None))
    requests = make_requests(6)
    make_client(llmock, tmp_path).complete_all(requests, show_progress=False)
    assert len(chat_requests(llmock)) == 6
    again = make_client(llmock, tmp_path)
    results = again.complete_all(requests, show_progress=False)
    assert len(chat_requests(llmock)) == 6
    assert again.stats.api_calls == 0 and again.stats.cache_hits == 6
    assert all(r.from_cache and r.text == "cached answer" for r in results)
    assert "SECRET" not in (tmp_path / "cache.jsonl").read_text()
    # A fresh sample of the same prompt is a different request.
    make_client(llmock, tmp_path).complete_all(make_requests(1, sample=1), show_progress=False)
    assert len(chat_requests(llmock)) == 7


def test_torn_last_cache_line_is_ignored_and_file_stays_readable(llmock, tmp_path):
    llmock.add(Reply(text="answer", times=None))
    requests = make_requests(3)
    client = make_client(llmock, tmp_path)
    client.complete_all(requests[:2], show_progress=False)
    with open(tmp_path / "cache.jsonl", "a") as f:
        f.write('{"key": "abc", "text": "half a li')  # what kill -9 during a write leaves
    cache = ResponseCache(tmp_path / "cache.jsonl")
    assert len(cache) == 2 and cache.torn_lines == 1
    client = ChatClient(client.settings, cache)
    client.complete_all(requests, show_progress=False)
    assert client.stats.api_calls == 1
    reloaded = ResponseCache(tmp_path / "cache.jsonl")
    assert len(reloaded) == 3 and reloaded.torn_lines == 1


def test_requests_really_run_concurrently(llmock, tmp_path):
    llmock.add(Delay(0.3, times=None), Reply(text="x", times=None))
    client = make_client(llmock, tmp_path, concurrency=8)
    start = time.monotonic()
    client.complete_all(make_requests(8), show_progress=False)
    assert time.monotonic() - start < 1.5  # one at a time would take 2.4 s
    assert len(chat_requests(llmock)) == 8


def test_requests_under_the_requests_per_minute_ceiling_go_out(llmock, tmp_path):
    llmock.add(Reply(text="x", times=None))
    client = make_client(llmock, tmp_path, requests_per_minute=3)
    client.complete_all(make_requests(2), show_progress=False)
    assert len(chat_requests(llmock)) == 2


def test_max_cost_stops_sending(llmock, tmp_path):
    llmock.add(Reply(text="a reply of some length " * 4, times=None))
    # 1000 USD per million tokens makes each request cost about 0.1 USD.
    client = make_client(llmock, tmp_path, concurrency=1, price_per_mtok=(1000.0, 1000.0), max_cost=0.5)
    results = client.complete_all(make_requests(20), show_progress=False)
    sent = chat_requests(llmock)
    assert 1 <= len(sent) < 20
    assert client.stats.stopped_by_max_cost
    assert client.stats.cost_usd <= 0.5
    assert sum(r.not_run for r in results) == 20 - len(sent) == client.stats.not_run
    assert all("max_cost" in r.error for r in results if r.not_run)


def test_estimate_sends_nothing(llmock, tmp_path):
    settings = ClientSettings(model="gpt-4o", base_url=llmock.base_url(), api_key="k")
    cache = ResponseCache(tmp_path / "cache.jsonl")
    requests = make_requests(5)
    cache.append({"key": cache_key(settings, requests[0]), "text": "t", "cost_usd": 0.25})
    report = estimate(requests, settings, cache)
    assert report["already_spent_usd"] == 0.25
    assert report["requests"] == 5 and report["cached"] == 1 and report["to_send"] == 4
    assert report["estimated_completion_tokens"] == 4 * 50
    assert report["estimated_cost_usd"] > 0
    assert chat_requests(llmock) == []


# ---------------------------------------------------------------- a scripted server for what llmock cannot send

class ScriptedServer:
    """A real chat-completions server on 127.0.0.1 that answers from a script of (status, headers, body) tuples,
    then with a plain "ok" completion. For responses llmock cannot produce, such as a `Retry-After: soon`."""

    def __init__(self, script):
        import http.server
        import threading

        self.script = list(script)
        self.times: list[float] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                server.times.append(time.monotonic())
                status, headers, body = server.script.pop(0) if server.script else (200, {}, None)
                if body is None:
                    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def scripted():
    servers = []

    def start(script):
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


RATE_LIMITED = {"error": {"message": "slow down", "type": "rate_limit"}}


# ---------------------------------------------------------------- cache identity

def test_identical_prompts_of_different_images_get_their_own_cached_answers(llmock, tmp_path):
    llmock.add(Reply(text="answer for a", times=1), Reply(text="answer for b", times=1))
    messages = [{"role": "user", "content": "the same prompt"}]
    requests = [ChatRequest("conversation/a", messages, "hash", 100), ChatRequest("conversation/b", messages, "hash", 100)]
    first = make_client(llmock, tmp_path, concurrency=1).complete_all(requests, show_progress=False)
    assert [r.text for r in first] == ["answer for a", "answer for b"]
    again = make_client(llmock, tmp_path).complete_all(requests, show_progress=False)
    assert len(chat_requests(llmock)) == 2
    assert [(r.text, r.from_cache) for r in again] == [("answer for a", True), ("answer for b", True)]


# ---------------------------------------------------------------- finish reasons

@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("finish", ["length", "content_filter"])
def test_finish_reason_is_reported_and_cached(llmock, tmp_path, finish, stream):
    llmock.add(Reply(text="a reply cut in the mid", finish_reason=finish, times=None))
    [result] = make_client(llmock, tmp_path, stream=stream).complete_all(make_requests(1), show_progress=False)
    assert result.finish_reason == finish and result.error is None
    [again] = make_client(llmock, tmp_path, stream=stream).complete_all(make_requests(1), show_progress=False)
    assert again.from_cache and again.finish_reason == finish
    assert len(chat_requests(llmock)) == 1


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize("value", ["soon", "Mon, 99 Foo 2020 25:61:00 GMT", "-5"])
def test_unreadable_retry_after_falls_back_to_backoff(scripted, tmp_path, value):
    server = scripted([(429, {"retry-after": value}, RATE_LIMITED)])
    client = ChatClient(ClientSettings(model="gpt-4o", base_url=server.base_url, api_key="k", stream=False,
                                       backoff_base_s=0.02, backoff_max_s=0.1), ResponseCache(tmp_path / "c.jsonl"))
    [result] = client.complete_all(make_requests(1), show_progress=False)
    assert result.text == "ok" and client.stats.retries == 1
    assert len(server.times) == 2 and server.times[1] - server.times[0] < 1.0


@pytest.mark.parametrize("value", ["86400", "inf"])
def test_huge_retry_after_is_capped_and_counted(scripted, tmp_path, value):
    server = scripted([(429, {"retry-after": value}, RATE_LIMITED)])
    client = ChatClient(ClientSettings(model="gpt-4o", base_url=server.base_url, api_key="k", stream=False,
                                       backoff_base_s=0.02, backoff_max_s=0.1, max_retry_wait_s=0.3),
                        ResponseCache(tmp_path / "c.jsonl"))
    [result] = client.complete_all(make_requests(1), show_progress=False)
    assert result.text == "ok"
    assert 0.25 <= server.times[1] - server.times[0] < 1.5
    assert client.stats.capped_retry_waits == 1


# ---------------------------------------------------------------- odd cache lines

def test_cache_lines_without_text_or_with_wrong_types_count_as_torn(llmock, tmp_path):
    llmock.add(Reply(text="fresh", times=None))
    requests = make_requests(4)
    settings = make_client(llmock, tmp_path).settings
    keys = [cache_key(settings, r) for r in requests]
    lines = [{"key": keys[0], "name": "img0"}, {"key": keys[1], "text": 5}, {"key": keys[2], "text": "t", "prompt_tokens": "x"},
             ["a", "list"], {"key": keys[3], "text": "kept", "prompt_tokens": 3, "completion_tokens": 2}]
    (tmp_path / "cache.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    cache = ResponseCache(tmp_path / "cache.jsonl")
    assert cache.torn_lines == 4 and len(cache) == 1
    client = ChatClient(settings, cache)
    results = client.complete_all(requests, show_progress=False)
    assert [r.text for r in results] == ["fresh", "fresh", "fresh", "kept"]
    assert client.stats.api_calls == 3


# ---------------------------------------------------------------- money already spent

def test_max_cost_counts_money_already_spent_in_the_cache(llmock, tmp_path):
    llmock.add(Reply(text="a reply of some length " * 4, times=None))
    first = make_client(llmock, tmp_path, concurrency=1, price_per_mtok=(1000.0, 1000.0), max_cost=0.5)
    first.complete_all(make_requests(20), show_progress=False)
    sent = len(chat_requests(llmock))
    assert 1 <= sent < 20 and first.stats.cost_usd <= 0.5
    again = make_client(llmock, tmp_path, concurrency=1, price_per_mtok=(1000.0, 1000.0), max_cost=0.5)
    assert again.stats.spent_before_usd == pytest.approx(first.stats.cost_usd)
    again.complete_all(make_requests(20), show_progress=False)
    assert again.stats.spent_before_usd + again.stats.cost_usd <= 0.5
    assert len(chat_requests(llmock)) == sent and again.stats.stopped_by_max_cost


# ---------------------------------------------------------------- failing fast

@pytest.mark.parametrize("status", [401, 403, 404])
def test_repeated_refusals_stop_the_run(llmock, tmp_path, status):
    llmock.add(Reply(text="answered", times=None))
    requests = make_requests(10)
    make_client(llmock, tmp_path).complete_all(requests[:2], show_progress=False)
    llmock.reset()
    llmock.add(Fail(status, message="no such thing", times=None))
    client = make_client(llmock, tmp_path, concurrency=1)
    results = client.complete_all(requests, show_progress=False)
    assert len(chat_requests(llmock)) == 3
    assert client.stop_reason is not None and f"HTTP {status}" in client.stop_reason
    assert [r.text for r in results[:2]] == ["answered", "answered"]
    assert sum(r.not_run for r in results) == 5 and all(client.stop_reason in r.error for r in results if r.not_run)
    assert len(ResponseCache(tmp_path / "cache.jsonl")) == 2


def test_different_errors_in_between_do_not_stop_the_run(llmock, tmp_path):
    llmock.add(Fail(401, times=2), Fail(400, times=1), Fail(401, times=2), Reply(text="fine", times=None))
    client = make_client(llmock, tmp_path, concurrency=1)
    results = client.complete_all(make_requests(6), show_progress=False)
    assert client.stop_reason is None and sum(r.not_run for r in results) == 0
    assert [r.text for r in results] == [None] * 5 + ["fine"]


def test_unreachable_server_stops_after_retries(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChatClient(ClientSettings(model="gpt-4o", base_url=f"http://127.0.0.1:{port}/v1", api_key="k",
                                       concurrency=1, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02),
                        ResponseCache(tmp_path / "cache.jsonl"))
    start = time.monotonic()
    results = client.complete_all(make_requests(20), show_progress=False)
    assert time.monotonic() - start < 10
    assert client.stats.api_calls == 3 * 2 and sum(r.not_run for r in results) == 17
    assert "connect" in client.stop_reason.lower()


def test_key_in_base_url_query_is_sent_but_never_shown(llmock, tmp_path, caplog):
    # The server echoes the key it was given, as some do in their error messages.
    llmock.add(Fail(401, message="bad key QUERYSECRET or sk-test-SECRET", times=None))
    url = llmock.base_url() + "?api_key=QUERYSECRET#FRAGSECRET"
    client = make_client(llmock, tmp_path, base_url=url, concurrency=1)
    with caplog.at_level("DEBUG"):
        results = client.complete_all(make_requests(4), show_progress=False)
    [first] = chat_requests(llmock)[:1]
    assert first.path == CHAT_PATH
    shown = caplog.text + client.stop_reason + "".join(r.error for r in results) + repr(client.settings)
    assert "QUERYSECRET" not in shown and "FRAGSECRET" not in shown and "sk-test-SECRET" not in shown


# ---------------------------------------------------------------- pacing from rate-limit headers


def test_pacing_from_headers_avoids_429s(llmock, tmp_path):
    # Two clients at once, each with its own key (so its own quota at the server) and model name (to tell their
    # requests apart in the server's journal), send 10 % more requests than the requests-per-minute quota.
    from concurrent.futures import ThreadPoolExecutor

    llmock.limits(rpm=120)

    def run(pace):
        client = make_client(llmock, tmp_path / str(pace), model=f"model-paced-{pace}", api_key=f"key-{pace}",
                             concurrency=8, stream=False, pace_from_headers=pace, max_retry_wait_s=5.0, max_retries=30)
        results = client.complete_all(make_requests(132), show_progress=False)
        assert all(r.error is None for r in results)
        return client

    with ThreadPoolExecutor(2) as pool:
        unpaced, paced = pool.map(run, [False, True])
    refused = {pace: sum(r.status == 429 and r.model == f"model-paced-{pace}" for r in chat_requests(llmock))
               for pace in (False, True)}
    assert refused[False] >= 4 and refused[True] <= refused[False] // 4, refused
    assert paced.stats.held_by_rate_limit_headers > 0 and unpaced.stats.held_by_rate_limit_headers == 0


# ---------------------------------------------------------------- structured outputs

SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "pairs", "strict": True, "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"], "additionalProperties": False}}}


def test_response_format_is_sent_and_keys_the_cache(llmock, tmp_path):
    text_request = make_requests(1)[0]
    structured = ChatRequest(text_request.name, text_request.messages, "hash", 100, 0, 50, SCHEMA_FORMAT)
    client = make_client(llmock, tmp_path)
    assert client.request_body(structured)["response_format"] == SCHEMA_FORMAT
    assert "response_format" not in client.request_body(text_request)
    assert cache_key(client.settings, structured) != cache_key(client.settings, text_request)
    [text_result] = client.complete_all([text_request], show_progress=False)
    # A reply cached for the text request is not served to the structured one: it is asked for.
    [result] = make_client(llmock, tmp_path).complete_all([structured], show_progress=False)
    first, second = chat_requests(llmock)
    assert "response_format" not in first.body and second.body["response_format"] == SCHEMA_FORMAT
    assert not result.from_cache and json.loads(result.text) == {"answer": "mock-answer"}


@pytest.mark.parametrize("message", [
    "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
    "This server does not support structured outputs",
])
def test_refused_response_format_stops_structured_requests_once(llmock, tmp_path, message):
    llmock.add(Fail(400, message=message, times=1), Reply(text="fine", times=None))
    client = make_client(llmock, tmp_path, concurrency=1)
    requests = [ChatRequest(f"img{i}", [{"role": "user", "content": f"image {i}"}], "hash", 100, 0, 50, SCHEMA_FORMAT)
                for i in range(3)]
    results = client.complete_all(requests + make_requests(1), show_progress=False)
    assert [r.format_refused for r in results] == [True, True, True, False]
    assert client.format_refusal is not None and "HTTP 400" in client.format_refusal
    # Only the first structured request reached the server; the text one was answered; none count as failed.
    assert [("response_format" in r.body, r.status) for r in chat_requests(llmock)] == [(True, 400), (False, 200)]
    assert results[3].text == "fine" and client.stats.failed == 0 and client.stop_reason is None


def test_other_400s_are_not_taken_for_a_refused_format(llmock, tmp_path):
    llmock.add(Fail(400, message="messages must not be empty", times=1), Reply(text="fine", times=None))
    client = make_client(llmock, tmp_path, concurrency=1)
    request = ChatRequest("img0", [{"role": "user", "content": "x"}], "hash", 100, 0, 50, SCHEMA_FORMAT)
    [result] = client.complete_all([request], show_progress=False)
    assert not result.format_refused and client.format_refusal is None and client.stats.failed == 1
