"""Batch mode of the LLM client (`dataset_builder.llm.batch`) against real servers on loopback: llmock (its
`/v1/files` and `/v1/batches`, whose lines it answers with its own text) and the scripted `batch_api` server of
testing_utils.py (well-formed replies, per-line errors, expired/failed/cancelled batches, output out of order).

Requests are counted at the servers, never by patching the openai client.
"""

import json
import signal
import subprocess
import sys
import time

import llmock.routers.batch as llmock_batches
import openai
import pytest

from dataset_builder.__main__ import main
from dataset_builder.build import BuildOptions, run_build
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
from dataset_builder.llm.batch import split_lines
from dataset_builder.prompts import REASONING_SYSTEM

from testing_utils import CONVERSATION_REPLY, MALFORMED_REPLY, REASONING_REPLY, subprocess_env


KEY = "sk-test-SECRET-batch"
# gpt-4o online prices are (2.5, 10) USD per million tokens; batch prices default to half. The scripted server
# reports 100 prompt and 50 completion tokens per line.
COST_PER_SCRIPTED_LINE = (100 * 1.25 + 50 * 5.0) / 1e6


@pytest.fixture()
def fast_llmock(llmock, monkeypatch):
    """llmock whose batches end 0.2 s after they are created (3 s by default)."""
    monkeypatch.setattr(llmock_batches, "_BATCH_DELAY", 0.2)
    return llmock


def llmock_calls(llmock, method, prefix):
    return [r for r in llmock.requests if r.method == method and r.path.startswith(prefix)]


def make_requests(n, sample=0):
    return [ChatRequest(f"img{i}", [{"role": "user", "content": f"describe image {i}"}], "hash", 100, sample, 50)
            for i in range(n)]


def make_client(base_url, folder, **batch):
    settings = ClientSettings(model="gpt-4o", base_url=base_url, api_key=KEY, backoff_base_s=0.01, backoff_max_s=0.05,
                              max_retries=1)
    return BatchClient(settings, BatchSettings(**{"poll_seconds": 0.02, **batch}), ResponseCache(folder / "cache.jsonl"),
                       folder / BATCH_STATE_FILE)


def uploaded_lines(server):
    """The JSONL lines of each input file the scripted server received, in upload order."""
    return [[json.loads(line) for line in data.decode().splitlines()] for file_id, data in server.files.items()
            if b'"method": "POST"' in data]


# ---------------------------------------------------------------------------------------------------- the client


def test_first_run_submits_split_files_then_rerun_and_online_mode_send_nothing(fast_llmock, tmp_path):
    requests = make_requests(5)
    client = make_client(fast_llmock.base_url(), tmp_path, max_lines_per_file=2)
    results = client.complete_all(requests, show_progress=False)
    assert [r.request.name for r in results] == [r.name for r in requests]
    assert all(r.error is None and r.text for r in results)
    assert len(llmock_calls(fast_llmock, "POST", "/v1/files")) == client.counts.uploads == 3  # 2 + 2 + 1 lines
    assert len(llmock_calls(fast_llmock, "POST", "/v1/batches")) == client.counts.batches_created == 3
    assert len(llmock_calls(fast_llmock, "GET", "/v1/batches/")) == client.counts.polls >= 3
    assert llmock_calls(fast_llmock, "POST", "/v1/chat/completions") == []
    assert client.stats.api_calls == client.counts.lines_submitted == 5
    # Cost at batch prices (half of gpt-4o's online price) from the server's token counts.
    lines = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert len(lines) == 5
    for line in lines:
        assert line["cost_usd"] == pytest.approx((line["prompt_tokens"] * 1.25 + line["completion_tokens"] * 5) / 1e6)
    state = json.loads((tmp_path / BATCH_STATE_FILE).read_text())
    assert [e["status"] for e in state["uploads"]] == ["completed"] * 3 and all(e["collected"] for e in state["uploads"])

    fast_llmock.reset()
    again = make_client(fast_llmock.base_url(), tmp_path, max_lines_per_file=2)
    rerun = again.complete_all(requests, show_progress=False)
    assert fast_llmock.requests == [] and again.stats.cache_hits == 5
    assert [r.text for r in rerun] == [r.text for r in results]
    # Online mode reads the same cache with the same keys.
    online = ChatClient(again.settings, ResponseCache(tmp_path / "cache.jsonl"))
    online.complete_all(requests, show_progress=False)
    assert fast_llmock.requests == [] and online.stats.cache_hits == 5
    for path in tmp_path.iterdir():
        assert "SECRET" not in path.read_text()


def test_split_lines_keeps_order_under_line_and_byte_limits():
    lines = [(f"id{i}", b"x" * size) for i, size in enumerate([40, 40, 40, 90, 10, 200, 10])]
    files, too_big = split_lines(lines, max_lines=2, max_bytes=100)
    assert [[cid for cid, _ in f] for f in files] == [["id0", "id1"], ["id2"], ["id3", "id4"], ["id6"]]
    assert too_big == ["id5"]
    assert all(len(f) <= 2 and sum(len(line) for _, line in f) <= 100 for f in files)


def test_tiny_byte_limit_splits_uploads_and_refuses_a_line_too_big(batch_api, tmp_path):
    requests = make_requests(4) + [ChatRequest("huge", [{"role": "user", "content": "y" * 2000}], "hash", 100, 0, 50)]
    line_bytes = len(make_client(batch_api.base_url(), tmp_path)._line("k" * 64, requests[0]))
    client = make_client(batch_api.base_url(), tmp_path, max_bytes_per_file=2 * line_bytes + 10)
    results = client.complete_all(requests, show_progress=False)
    files = uploaded_lines(batch_api)
    assert [len(f) for f in files] == [2, 2] and batch_api.count("POST", "/v1/batches") == 2
    for data in batch_api.files.values():
        assert len(data) <= 2 * line_bytes + 10 or b'"method"' not in data
    assert all(r.text == CONVERSATION_REPLY for r in results[:4])
    assert "over the" in results[4].error and "bytes a batch file may hold" in results[4].error
    # Each line is the online request's body under a custom_id that is its cache key.
    first = files[0][0]
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
    assert first["custom_id"] == cache_key(client.settings, requests[0])
    assert first["body"] == ChatClient(client.settings, client.cache).request_body(requests[0])


def test_results_are_mapped_back_by_custom_id_when_output_comes_out_of_order(batch_api, tmp_path):
    batch_api.reply = lambda body: f"Answer for {body['messages'][0]['content']}"
    requests = make_requests(6)
    results = make_client(batch_api.base_url(), tmp_path).complete_all(requests, show_progress=False)
    output = next(data for file_id, data in batch_api.files.items() if b'"response"' in data)
    returned = [json.loads(line)["custom_id"] for line in output.decode().splitlines()]
    assert returned == [line["custom_id"] for line in reversed(uploaded_lines(batch_api)[0])]
    assert [r.text for r in results] == [f"Answer for describe image {i}" for i in range(6)]
    assert all(r.cost_usd == pytest.approx(COST_PER_SCRIPTED_LINE) for r in results)


def test_per_line_errors_fail_with_their_reason_and_the_rest_is_kept(batch_api, tmp_path):
    batch_api.reply = lambda body: 400 if body["messages"][0]["content"].endswith(("1", "3")) else "fine"
    client = make_client(batch_api.base_url(), tmp_path)
    results = client.complete_all(make_requests(4), show_progress=False)
    assert [r.text for r in results] == ["fine", None, "fine", None]
    for result in (results[1], results[3]):
        assert "status 400" in result.error and "scripted error 400" in result.error and not result.not_run
    assert client.stats.failed == 2 and client.counts.lines_failed == 2
    assert len(ResponseCache(tmp_path / "cache.jsonl")) == 2


@pytest.mark.parametrize("outcome, kept, words", [
    ("expired", 2, "expired (completion window 24h)"),
    ("cancelled", 1, "was cancelled"),
    ("failed", 0, "failed: invalid_request: scripted failure"),
])
def test_ended_batches_keep_finished_lines_and_fail_the_rest_with_the_reason(batch_api, tmp_path, outcome, kept, words):
    batch_api.outcomes = [outcome]
    batch_api.lines_before_end = kept
    client = make_client(batch_api.base_url(), tmp_path)
    requests = make_requests(4)
    results = client.complete_all(requests, show_progress=False)
    assert [r.text for r in results[:kept]] == [CONVERSATION_REPLY] * kept
    for result in results[kept:]:
        assert result.text is None and words in result.error and not result.not_run
    state = json.loads((tmp_path / BATCH_STATE_FILE).read_text())["uploads"]
    assert state[0]["status"] == outcome and state[0]["collected"]
    # A rerun submits only the lines that did not finish, in a new batch.
    batch_api.outcomes = ["completed"]
    again = make_client(batch_api.base_url(), tmp_path).complete_all(requests, show_progress=False)
    assert all(r.text == CONVERSATION_REPLY for r in again)
    assert [len(f) for f in uploaded_lines(batch_api)] == [4, 4 - kept]


def test_cancelled_batch_on_llmock_fails_its_lines(llmock, tmp_path, monkeypatch):
    monkeypatch.setattr(llmock_batches, "_BATCH_DELAY", 30.0)
    client = make_client(llmock.base_url(), tmp_path)
    requests = make_requests(2)
    state_path = tmp_path / BATCH_STATE_FILE

    def cancel_when_recorded():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if state_path.exists() and json.loads(state_path.read_text())["uploads"][0]["batch_id"]:
                batch_id = json.loads(state_path.read_text())["uploads"][0]["batch_id"]
                openai.OpenAI(base_url=llmock.base_url(), api_key="x").batches.cancel(batch_id)
                return
            time.sleep(0.01)

    import threading

    canceller = threading.Thread(target=cancel_when_recorded)
    canceller.start()
    results = client.complete_all(requests, show_progress=False)
    canceller.join()
    assert all("was cancelled" in r.error for r in results)
    assert len(llmock_calls(llmock, "POST", "/v1/batches")) == 2  # the create and the cancel


def test_max_cost_reserves_before_submitting_and_leaves_the_rest_not_run(batch_api, tmp_path):
    client = make_client(batch_api.base_url(), tmp_path)
    requests = make_requests(5)
    per_request = client._estimated_cost(requests[0])
    client.settings.max_cost = 2.5 * per_request
    results = client.complete_all(requests, show_progress=False)
    assert [len(f) for f in uploaded_lines(batch_api)] == [2]
    assert [r.text is not None for r in results] == [True, True, False, False, False]
    assert all(r.not_run and "--max_cost" in r.error for r in results[2:])
    assert client.stats.stopped_by_max_cost and client.stats.not_run == 3


def test_recorded_upload_whose_create_was_not_recorded_is_not_batched_twice(batch_api, tmp_path):
    """A crash between the create and recording its id: the rerun finds the batch by its input file."""
    requests = make_requests(3)
    client = make_client(batch_api.base_url(), tmp_path)
    remote = openai.OpenAI(base_url=batch_api.base_url(), api_key="x")
    data = b"".join(client._line(cache_key(client.settings, r), r) for r in requests)
    uploaded = remote.files.create(file=("in.jsonl", data), purpose="batch")
    created = remote.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="24h")
    (tmp_path / BATCH_STATE_FILE).write_text(json.dumps({"uploads": [
        {"input_file_id": uploaded.id, "custom_ids": [cache_key(client.settings, r) for r in requests],
         "uploaded_at": uploaded.created_at, "estimated_cost_usd": 0.0, "batch_id": None, "status": None,
         "collected": False}]}))
    before = batch_api.count("POST", "/v1/batches")
    results = client.complete_all(requests, show_progress=False)
    assert all(r.text == CONVERSATION_REPLY for r in results)
    assert batch_api.count("POST", "/v1/batches") == before and batch_api.count("POST", "/v1/files") == 1
    assert client.counts.batches_resumed == 1 and client.counts.batches_created == 0
    state = json.loads((tmp_path / BATCH_STATE_FILE).read_text())["uploads"]
    assert state[0]["batch_id"] == created.id and state[0]["collected"]


def test_recorded_upload_that_never_became_a_batch_is_uploaded_again(batch_api, tmp_path):
    requests = make_requests(2)
    client = make_client(batch_api.base_url(), tmp_path)
    uploaded = openai.OpenAI(base_url=batch_api.base_url(), api_key="x").files.create(
        file=("in.jsonl", b"{}\n"), purpose="batch")
    (tmp_path / BATCH_STATE_FILE).write_text(json.dumps({"uploads": [
        {"input_file_id": uploaded.id, "custom_ids": [cache_key(client.settings, r) for r in requests],
         "uploaded_at": uploaded.created_at, "estimated_cost_usd": 0.0, "batch_id": None, "status": None,
         "collected": False}]}))
    results = client.complete_all(requests, show_progress=False)
    assert all(r.text == CONVERSATION_REPLY for r in results)
    assert batch_api.count("POST", "/v1/files") == 2 and batch_api.count("POST", "/v1/batches") == 1
    state = json.loads((tmp_path / BATCH_STATE_FILE).read_text())["uploads"]
    assert [e["status"] for e in state] == ["never created", "completed"]


def test_refused_key_stops_the_round_and_writes_no_secret(batch_api, tmp_path):
    client = make_client(batch_api.base_url().replace("/v1", "/nowhere"), tmp_path)
    results = client.complete_all(make_requests(2), show_progress=False)
    assert client.stop_reason is not None and "HTTP 404" in client.stop_reason
    assert all(r.not_run for r in results) and KEY not in client.stop_reason


def test_settings_are_checked():
    with pytest.raises(ValueError, match="poll_seconds is 0"):
        BatchSettings(poll_seconds=0)
    with pytest.raises(ValueError, match="max_lines_per_file"):
        BatchSettings(max_lines_per_file=0)
    settings = ClientSettings(model="gpt-4o")
    assert BatchSettings().prices(settings) == (1.25, 5.0)
    assert BatchSettings(price_per_mtok=(1.0, 2.0)).prices(settings) == (1.0, 2.0)


# ---------------------------------------------------------------------------------------------------- the build


def well_formed(body):
    """The reply a well-behaved model gives to a build's conversation or reasoning prompt."""
    return REASONING_REPLY if body["messages"][0]["content"] == REASONING_SYSTEM else CONVERSATION_REPLY


def batch_build_command(root, out, base_url, *extra):
    return [sys.executable, "-m", "dataset_builder", "build", "--emoset_root", str(root), "--output_dir", str(out),
            "--llm_backend", "openai", "--llm_mode", "batch", "--batch_poll_seconds", "0.05", "--base_url", base_url,
            "--types", "conversation,reasoning", "--per_class", "conversation=1,reasoning=1", "--no_progress", *extra]


def batch_options(root, out, base_url):
    settings = ClientSettings(model="gpt-4o", base_url=base_url, api_key=KEY, backoff_base_s=0.01, backoff_max_s=0.05)
    return BuildOptions(emoset_root=str(root), output_dir=str(out), types=("conversation", "reasoning"),
                        per_class={"conversation": 1, "reasoning": 1}, llm_backend="openai", show_progress=False,
                        llm=settings, batch=BatchSettings(poll_seconds=0.02))


def test_build_in_batch_mode_writes_records_and_a_malformed_reply_gets_a_follow_up_batch(synthetic_root, tmp_path,
                                                                                          batch_api, caplog):
    replies = iter([MALFORMED_REPLY])  # the first line answered gets a malformed reply, the others good ones

    batch_api.reply = lambda body: next(replies, None) or well_formed(body)
    out = tmp_path / "out"
    summary = run_build(batch_options(synthetic_root, out, batch_api.base_url()))
    assert summary["records_per_type"] == {"conversation": 24, "reasoning": 8}
    assert summary["failed"] == [] and summary["not_run"] == []
    # conversation: 8 lines, then 1 follow-up line (sample 2) for the malformed reply; reasoning: 8 lines.
    assert [len(f) for f in uploaded_lines(batch_api)] == [8, 1, 8]
    follow_up = uploaded_lines(batch_api)[1][0]
    assert follow_up["body"]["messages"] in [line["body"]["messages"] for line in uploaded_lines(batch_api)[0]]
    assert summary["api_calls"] == 17 and summary["cost_usd"] == pytest.approx(17 * COST_PER_SCRIPTED_LINE)
    assert summary["batch_api"]["uploads"] == 3 and summary["batch_api"]["batches_created"] == 3
    assert summary["args"]["llm_mode"] == "batch"
    assert summary["args"]["batch_price_per_mtok"] == [1.25, 5.0]
    written = b"".join(p.read_bytes() for p in out.iterdir() if p.is_file())  # quality.png is binary
    assert KEY.encode() not in written and KEY not in caplog.text

    calls = len(batch_api.calls)
    again = run_build(batch_options(synthetic_root, out, batch_api.base_url()))
    assert len(batch_api.calls) == calls and again["api_calls"] == 0 and again["cache_hits"] == 17
    assert again["records_per_type"] == summary["records_per_type"]


def test_build_on_llmock_gives_malformed_replies_a_second_sample_then_fails_them(synthetic_root, tmp_path, fast_llmock):
    out = tmp_path / "out"
    options = batch_options(synthetic_root, out, fast_llmock.base_url())
    options.types, options.per_class = ("conversation",), {"conversation": 1}
    summary = run_build(options)
    # llmock answers batch lines with its own text, which has no Question/Answer pairs.
    assert summary["records_per_type"] == {"conversation": 0}
    assert len(summary["failed"]) == 8 and all("(after 2 samples)" in f["reason"] for f in summary["failed"])
    assert len(llmock_calls(fast_llmock, "POST", "/v1/files")) == 2
    assert len(llmock_calls(fast_llmock, "POST", "/v1/batches")) == 2
    assert summary["batch_api"]["lines_submitted"] == summary["api_calls"] == 16


def test_dry_run_in_batch_mode_estimates_batch_cost_and_sends_nothing(synthetic_root, tmp_path, llmock, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    args = ["build", "--emoset_root", str(synthetic_root), "--output_dir", str(tmp_path / "out"), "--llm_backend",
            "openai", "--base_url", llmock.base_url(), "--types", "conversation", "--per_class", "conversation=2",
            "--dry_run", "--no_progress"]
    assert main(args + ["--llm_mode", "batch"]) == 0
    estimate = json.loads(capsys.readouterr().out)["conversation"]
    assert main(args) == 0
    online = json.loads(capsys.readouterr().out)["conversation"]
    assert llmock.requests == [] and not (tmp_path / "out").exists()
    assert estimate["llm_mode"] == "batch" and estimate["to_send"] == 16
    assert estimate["batch_files"] == estimate["batches"] == 1
    # both are rounded to 6 places, so half of one is the other within 1e-6
    assert estimate["estimated_cost_usd"] == pytest.approx(online["estimated_cost_usd"] / 2, abs=1e-6)
    assert estimate["estimated_cost_usd_online"] == pytest.approx(online["estimated_cost_usd"])
    with pytest.raises(SystemExit, match="needs --llm_backend openai"):
        main(["build", "--emoset_root", str(synthetic_root), "--output_dir", str(tmp_path / "out"), "--llm_mode",
              "batch"])


@pytest.mark.integration
def test_killed_while_a_batch_is_pending_the_rerun_polls_the_same_batch(synthetic_root, tmp_path, batch_api,
                                                                        monkeypatch):
    batch_api.reply = well_formed
    batch_api.hold = True
    out = tmp_path / "out"
    command = batch_build_command(synthetic_root, out, batch_api.base_url(), "--types", "conversation")
    env = subprocess_env(OPENAI_API_KEY=KEY)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = out / BATCH_STATE_FILE
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and batch_api.count("GET", "/v1/batches/") < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    [entry] = json.loads(state_path.read_text())["uploads"]
    assert entry["batch_id"] in batch_api.batches and not entry["collected"] and len(entry["custom_ids"]) == 8
    assert batch_api.count("POST", "/v1/files") == 1 and batch_api.count("POST", "/v1/batches") == 1
    assert not (out / "instructions.jsonl").exists()

    batch_api.hold = False
    polls_before = batch_api.count("GET", f"/v1/batches/{entry['batch_id']}")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert batch_api.count("POST", "/v1/files") == 1 and batch_api.count("POST", "/v1/batches") == 1
    assert batch_api.count("GET", f"/v1/batches/{entry['batch_id']}") > polls_before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records_per_type"] == {"conversation": 24} and summary["failed"] == []
    assert summary["batch_api"]["batches_resumed"] == 1 and summary["batch_api"]["uploads"] == 0
    assert b"SECRET" not in b"".join(p.read_bytes() for p in out.iterdir() if p.is_file())
    assert "SECRET" not in result.stderr

    # After completion a rerun sends nothing: every answer is in the cache.
    calls = len(batch_api.calls)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert main(command[3:]) == 0 and len(batch_api.calls) == calls


# ---------------------------------------------------------------------------------------------------- pending batches


def kill_while_pending(command, env, state_path, server_count):
    """Starts the batch build `command`, kills it (-9) once its batch is recorded and polled; returns the entry."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server_count() < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    [entry] = json.loads(state_path.read_text())["uploads"]
    assert entry["batch_id"] and not entry["collected"]
    return entry


def online(command):
    """The arguments of `command` (a batch build) for the same build in online mode."""
    return [arg for arg in command[3:] if arg not in ("--llm_mode", "batch")]


@pytest.mark.integration
def test_online_rerun_after_a_killed_batch_build_collects_the_batch_first_and_counts_its_cost(
        synthetic_root, tmp_path, batch_api, monkeypatch):
    """kill -9 while a batch is in progress, then the same build online: the batch is collected (its answers and
    its cost) before any request, so nothing is paid twice; a later batch run finds everything answered."""
    batch_api.reply = well_formed
    batch_api.hold = True
    out = tmp_path / "out"
    command = batch_build_command(synthetic_root, out, batch_api.base_url(), "--types", "conversation")
    entry = kill_while_pending(command, subprocess_env(OPENAI_API_KEY=KEY), out / BATCH_STATE_FILE,
                               lambda: batch_api.count("GET", "/v1/batches/"))

    batch_api.hold = False
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    polls_before = batch_api.count("GET", f"/v1/batches/{entry['batch_id']}")
    assert main(online(command)) == 0
    assert batch_api.count("POST", "/v1/chat/completions") == 0  # every answer came from the batch
    assert batch_api.count("GET", f"/v1/batches/{entry['batch_id']}") > polls_before
    [after] = json.loads((out / BATCH_STATE_FILE).read_text())["uploads"]
    assert after["collected"] and after["status"] == "completed"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records_per_type"] == {"conversation": 24} and summary["failed"] == []
    assert summary["api_calls"] == 0 and summary["batch_api"]["batches_resumed"] == 1
    assert summary["cost_usd_total"] == pytest.approx(8 * COST_PER_SCRIPTED_LINE) and summary["cost_usd_reserved"] == 0

    calls = len(batch_api.calls)
    assert main(command[3:]) == 0 and len(batch_api.calls) == calls  # batch mode again: all answered, nothing sent


@pytest.mark.integration
def test_online_rerun_cancels_a_pending_batch_when_asked_before_sending(synthetic_root, tmp_path, llmock,
                                                                        monkeypatch):
    monkeypatch.setattr(llmock_batches, "_BATCH_DELAY", 60.0)
    out = tmp_path / "out"
    command = batch_build_command(synthetic_root, out, llmock.base_url(), "--types", "conversation")
    entry = kill_while_pending(command, subprocess_env(OPENAI_API_KEY=KEY), out / BATCH_STATE_FILE,
                               lambda: len(llmock_calls(llmock, "GET", "/v1/batches/")))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    main(online(command) + ["--pending_batches", "cancel"])
    paths = [(r.method, r.path) for r in llmock.requests]
    cancel = paths.index(("POST", f"/v1/batches/{entry['batch_id']}/cancel"))
    assert ("POST", "/v1/chat/completions") in paths[cancel:] and ("POST", "/v1/chat/completions") not in paths[:cancel]
    [after] = json.loads((out / BATCH_STATE_FILE).read_text())["uploads"]
    assert after["collected"] and after["status"] == "cancelled"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch_api"]["batches_cancelled"] == 1 and summary["cost_usd_reserved"] == 0


def pending_entry(folder, batch_id, custom_ids, estimated_cost_usd):
    """Records in `folder`'s state file a batch an earlier run submitted and never collected."""
    (folder / BATCH_STATE_FILE).write_text(json.dumps({"uploads": [
        {"input_file_id": "file-earlier", "custom_ids": custom_ids, "uploaded_at": time.time(),
         "estimated_cost_usd": estimated_cost_usd, "batch_id": batch_id, "status": "in_progress",
         "collected": False}]}))


def test_a_pending_batch_of_other_requests_counts_against_max_cost(batch_api, tmp_path):
    client = make_client(batch_api.base_url(), tmp_path)
    requests = make_requests(3)
    per_request = client._estimated_cost(requests[0])
    pending_entry(tmp_path, "batch-of-reasoning", ["other-request"], 1.0)
    assert client.estimate(requests)["reserved_usd"] == 1.0
    client.settings.max_cost = 1.0 + 1.5 * per_request
    results = client.complete_all(requests, show_progress=False)
    assert [len(f) for f in uploaded_lines(batch_api)] == [1]
    assert [r.text is not None for r in results] == [True, False, False]
    assert all("USD reserved for batches submitted and not collected" in r.error for r in results[1:])
    assert client.reserved_usd() == 1.0


def test_a_pending_batch_that_cannot_be_collected_stops_an_online_build_before_any_request(
        synthetic_root, tmp_path, batch_api, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    pending_entry(out, "batch-gone", ["some-request"], 0.5)  # the server answers 404 for it
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    command = online(batch_build_command(synthetic_root, out, batch_api.base_url(), "--types", "conversation"))
    assert main(command) == 1
    assert batch_api.count("POST", "/v1/chat/completions") == 0
    assert BATCH_STATE_FILE in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cost_usd_reserved"] == 0.5 and summary["cost_usd_total"] == 0.5
    assert len(summary["not_run"]) == 8 and BATCH_STATE_FILE in summary["stopped_by_server_error"]
